"""/v1/chat/completions through the official openai client, against the live server."""

from __future__ import annotations

import math

LLM = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def greedy(openai_client, messages=FRANCE, **kwargs):
    kwargs.setdefault("max_tokens", 32)
    return openai_client.chat.completions.create(model=LLM, messages=messages, temperature=0, **kwargs)


def test_capital_of_france(openai_client):
    response = greedy(openai_client)
    choice = response.choices[0]
    assert "paris" in choice.message.content.lower()
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert response.model == LLM
    assert response.object == "chat.completion"
    usage = response.usage
    assert usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 32
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_matches_non_streaming(openai_client):
    expected = greedy(openai_client, max_tokens=24)
    stream = openai_client.chat.completions.create(
        model=LLM,
        messages=FRANCE,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [expected.choices[0].finish_reason]
    # include_usage: one last chunk with usage and no choices; the others carry usage=None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == expected.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_content_as_text_parts(openai_client):
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}]
    response = greedy(openai_client, messages=[{"role": "user", "content": parts}])
    assert response.choices[0].message.content


def test_system_and_multi_turn(openai_client):
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert "paris" in greedy(openai_client, messages=messages).choices[0].message.content.lower()


def test_max_tokens_gives_length(openai_client):
    response = greedy(openai_client, max_completion_tokens=3)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 3


def test_stop_string_cuts_the_text(openai_client):
    full = greedy(openai_client, max_tokens=24).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    response = greedy(openai_client, max_tokens=24, stop=[stop])
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.content == full[: full.index(stop)]


def test_n_choices_with_seed(openai_client):
    kwargs = dict(model=LLM, messages=FRANCE, temperature=1.0, max_tokens=12, n=2, seed=1234)
    first = openai_client.chat.completions.create(**kwargs)
    again = openai_client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1]
    assert all(c.message.content for c in first.choices)
    # seeded sampling is reproducible, choice by choice
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]


def test_streaming_n2(openai_client):
    stream = openai_client.chat.completions.create(
        model=LLM, messages=FRANCE, temperature=0, max_tokens=8, n=2, stream=True
    )
    texts = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] and texts[0] == texts[1]  # greedy: both choices agree


def test_logprobs(openai_client):
    response = greedy(openai_client, max_tokens=5, logprobs=True, top_logprobs=3)
    assert response.choices[0].finish_reason == "length"
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert "".join(t.token for t in content) == response.choices[0].message.content
    for token in content:
        assert token.logprob <= 0.0
        assert len(token.top_logprobs) == 3
        assert token.bytes == list(token.token.encode())
        best = max(t.logprob for t in token.top_logprobs)
        assert math.isclose(token.logprob, best, abs_tol=1e-3)  # greedy picks the most likely token


def test_penalties_and_vllm_extras(openai_client):
    response = openai_client.chat.completions.create(
        model=LLM,
        messages=FRANCE,
        max_tokens=16,
        temperature=0.7,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        seed=7,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert response.choices[0].message.content


def test_logit_bias_bans_a_token(openai_client, server, http):
    full = greedy(openai_client, max_tokens=8, logprobs=True).choices[0]
    first = full.logprobs.content[0].token
    ids = http.post(f"{server.base_url}/tokenize", json={"prompt": first, "add_special_tokens": False}).json()
    assert ids["count"] == 1
    banned = greedy(openai_client, max_tokens=8, logprobs=True, logit_bias={str(ids["tokens"][0]): -100})
    assert banned.choices[0].logprobs.content[0].token != first


def test_default_max_tokens_is_the_rest_of_the_context(openai_client):
    response = openai_client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Say hi."}], temperature=0
    )
    assert response.choices[0].finish_reason == "stop"
