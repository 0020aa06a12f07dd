"""vLLM's chat and completion options on the live server: echo with logprobs, prompt_logprobs, min_tokens,
allowed_token_ids, bad_words, truncate_prompt_tokens, return_token_ids, best_of (greedy or seeded, so
every check is exact). The chat-template options are in test_http_chat_options.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from engine.config import default_cache_dir
from engine.models.llm_loader import load_llm

LLM = "smollm2-135m-instruct"
PROMPT = "The capital of France is"
EIFFEL = "The Eiffel Tower is located in"


def post(http, server, path: str, body: dict[str, Any], status: int = 200) -> dict:
    named = {"model": LLM, **body} if path.startswith("/v1/") else body
    response = http.post(f"{server.base_url}{path}", json=named)
    assert response.status_code == status, response.text
    return response.json()


def complete(http, server, **body: Any) -> dict:
    return post(http, server, "/v1/completions", {"temperature": 0, **body})


def chat(http, server, content: str, **body: Any) -> dict:
    messages = [{"role": "user", "content": content}]
    return post(http, server, "/v1/chat/completions", {"messages": messages, "temperature": 0, **body})


def streamed(http, server, path: str, body: dict[str, Any]) -> list[dict]:
    response = http.post(f"{server.base_url}{path}", json={"model": LLM, "stream": True, **body}, stream=True)
    assert response.status_code == 200, response.text
    chunks = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line[len("data: ") :]))
    return chunks


def tokenize(http, server, text: str) -> list[int]:
    return post(http, server, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]


@pytest.fixture(scope="module")
def reference_logprobs():
    """The prompt tokens' logprobs from a plain transformers forward of the same weights."""
    bundle = load_llm(LLM, default_cache_dir(), "cpu")

    def score(ids: list[int]) -> list[float]:
        with torch.no_grad():
            logits = bundle.model(torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        return [float(logprobs[j - 1, ids[j]]) for j in range(1, len(ids))]

    return score


def test_echo_logprobs_equal_a_transformers_forward(http, server, reference_logprobs):
    ids = tokenize(http, server, PROMPT)
    body = complete(http, server, prompt=PROMPT, echo=True, logprobs=2, max_tokens=0)
    choice = body["choices"][0]
    assert choice["text"] == PROMPT
    assert body["usage"]["completion_tokens"] == 0
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == PROMPT
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:j]) for j in range(len(ids))]
    expected = reference_logprobs(ids)
    assert len(lp["token_logprobs"]) == len(ids)
    for got, want in zip(lp["token_logprobs"][1:], expected, strict=True):
        assert abs(got - want) < 1e-3
    assert all(len(top) == 2 for top in lp["top_logprobs"][1:])
    # " of" after "The capital" is the model's first choice: it heads its own top list
    assert lp["top_logprobs"][2][" of"] == pytest.approx(lp["token_logprobs"][2], abs=1e-6)


def test_echo_logprobs_with_generated_tokens(http, server):
    plain = complete(http, server, prompt=PROMPT, logprobs=1, max_tokens=4)["choices"][0]
    echoed = complete(http, server, prompt=PROMPT, echo=True, logprobs=1, max_tokens=4)["choices"][0]
    assert echoed["text"] == PROMPT + plain["text"]
    prompt_len = len(tokenize(http, server, PROMPT))
    lp = echoed["logprobs"]
    assert lp["tokens"][prompt_len:] == plain["logprobs"]["tokens"]
    assert lp["token_logprobs"][prompt_len:] == plain["logprobs"]["token_logprobs"]
    assert lp["text_offset"][prompt_len] == len(PROMPT)

    chunks = streamed(http, server, "/v1/completions", {"prompt": PROMPT, "echo": True, "logprobs": 1,
                                                        "max_tokens": 4, "temperature": 0})  # fmt: skip
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(c["text"] for c in choices) == echoed["text"]
    tokens = [t for c in choices if c["logprobs"] for t in c["logprobs"]["tokens"]]
    offsets = [o for c in choices if c["logprobs"] for o in c["logprobs"]["text_offset"]]
    assert tokens == lp["tokens"] and offsets == lp["text_offset"]


def test_prompt_logprobs(http, server):
    ids = tokenize(http, server, PROMPT)
    echoed = complete(http, server, prompt=PROMPT, echo=True, logprobs=0, max_tokens=0)["choices"][0]
    choice = complete(http, server, prompt=PROMPT, prompt_logprobs=1, max_tokens=2)["choices"][0]
    assert choice["logprobs"] is None
    entries = choice["prompt_logprobs"]
    assert entries[0] is None and len(entries) == len(ids)
    for j in range(1, len(ids)):
        entry = entries[j][str(ids[j])]
        assert entry["logprob"] == pytest.approx(echoed["logprobs"]["token_logprobs"][j], abs=1e-6)
        assert entry["decoded_token"] == echoed["logprobs"]["tokens"][j]
        best = [e for e in entries[j].values() if e["rank"] == 1]
        assert len(best) == 1 and best[0]["logprob"] >= entry["logprob"]
        assert entry["rank"] == 1 or len(entries[j]) == 2

    body = chat(http, server, "Hi", prompt_logprobs=0, max_tokens=2)
    assert len(body["prompt_logprobs"]) == body["usage"]["prompt_tokens"]
    assert body["prompt_logprobs"][0] is None
    assert all(len(e) == 1 for e in body["prompt_logprobs"][1:])
    assert "prompt_logprobs" not in chat(http, server, "Hi", max_tokens=2)  # only when asked for
    refused = post(
        http, server, "/v1/completions", {"prompt": PROMPT, "prompt_logprobs": 1, "stream": True}, 400
    )
    assert refused["error"]["param"] == "prompt_logprobs"


def test_min_tokens(http, server):
    question = "What is 2+2?"
    short = chat(http, server, question, max_tokens=60)
    assert short["choices"][0]["finish_reason"] == "stop"
    made = short["usage"]["completion_tokens"]
    assert made < 20
    longer = chat(http, server, question, max_tokens=60, min_tokens=made + 10)
    assert longer["usage"]["completion_tokens"] >= made + 10
    assert longer["choices"][0]["message"]["content"].startswith(short["choices"][0]["message"]["content"])
    # a stop string does not end the sequence before min_tokens either
    stopped = chat(http, server, question, max_tokens=60, stop=[" "])
    assert stopped["usage"]["completion_tokens"] <= 2
    held = chat(http, server, question, max_tokens=60, stop=[" "], min_tokens=5)
    assert held["usage"]["completion_tokens"] >= 5
    generate = post(http, server, "/generate", {"text": PROMPT, "sampling_params": {
        "temperature": 0, "max_new_tokens": 40, "min_new_tokens": 30, "stop": ["."]}})  # fmt: skip
    assert generate["meta_info"]["completion_tokens"] >= 30
    refused = post(http, server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "min_tokens": 3}, 400)
    assert refused["error"]["param"] == "min_tokens"


def test_allowed_token_ids(http, server):
    allowed = tokenize(http, server, " yes") + tokenize(http, server, " no") + tokenize(http, server, "!")
    for temperature in (0, 1):
        choice = complete(http, server, prompt=PROMPT, max_tokens=6, allowed_token_ids=allowed,
                          temperature=temperature, seed=3, return_token_ids=True)["choices"][0]  # fmt: skip
        assert len(choice["token_ids"]) == 6 and set(choice["token_ids"]) <= set(allowed)
    refused = post(http, server, "/v1/completions", {"prompt": PROMPT, "allowed_token_ids": [10**8]}, 400)
    assert refused["error"]["param"] == "allowed_token_ids"


def test_bad_words(http, server):
    plain = complete(http, server, prompt=PROMPT, max_tokens=8)["choices"][0]["text"]
    assert "Paris" in plain
    assert (
        "Paris"
        not in complete(http, server, prompt=PROMPT, max_tokens=8, bad_words=["Paris"])["choices"][0]["text"]
    )
    # A word of two tokens: only its last token is banned, and only right after its first.
    first = complete(http, server, prompt=EIFFEL, max_tokens=8, return_token_ids=True)["choices"][0]
    assert "Corée" in first["text"]
    cor, ee = tokenize(http, server, " Corée")
    at = first["token_ids"].index(ee)
    assert first["token_ids"][at - 1] == cor
    banned = complete(http, server, prompt=EIFFEL, max_tokens=8, return_token_ids=True,
                      bad_words=["Corée"])["choices"][0]  # fmt: skip
    assert banned["token_ids"][:at] == first["token_ids"][:at]  # " Cor" itself is still allowed
    assert banned["token_ids"][at] != ee and "Corée" not in banned["text"]
    assert "Paris" not in chat(http, server, "What is the capital of France?", bad_words=["Paris"],
                               max_tokens=30)["choices"][0]["message"]["content"]  # fmt: skip


def test_truncate_prompt_tokens(http, server):
    text = "one two three four five six seven eight nine ten"
    ids = tokenize(http, server, text)
    body = complete(http, server, prompt=text, truncate_prompt_tokens=4, echo=True, max_tokens=1,
                    return_token_ids=True)  # fmt: skip
    assert body["usage"]["prompt_tokens"] == 4
    assert body["choices"][0]["prompt_token_ids"] == ids[-4:]
    assert body["choices"][0]["text"].startswith(" seven eight nine ten")
    right = complete(http, server, prompt=ids, truncate_prompt_tokens=3, truncation_side="right", max_tokens=1,
                     return_token_ids=True)  # fmt: skip
    assert right["choices"][0]["prompt_token_ids"] == ids[:3]
    whole = complete(http, server, prompt=text, truncate_prompt_tokens=-1, max_tokens=1)
    assert whole["usage"]["prompt_tokens"] == len(ids)
    assert chat(http, server, text, truncate_prompt_tokens=5, max_tokens=1)["usage"]["prompt_tokens"] == 5
    refused = post(http, server, "/v1/completions", {"prompt": text, "truncate_prompt_tokens": 10**6}, 400)
    assert refused["error"]["param"] == "truncate_prompt_tokens"


def test_return_token_ids(http, server):
    body = complete(http, server, prompt=PROMPT, max_tokens=6, return_token_ids=True)
    choice = body["choices"][0]
    assert choice["prompt_token_ids"] == tokenize(http, server, PROMPT)
    assert len(choice["token_ids"]) == body["usage"]["completion_tokens"] == 6
    assert post(http, server, "/detokenize", {"tokens": choice["token_ids"]})["prompt"] == choice["text"]
    plain = complete(http, server, prompt=PROMPT, max_tokens=6)["choices"][0]
    assert "token_ids" not in plain and "prompt_token_ids" not in plain  # only when asked for

    chunks = streamed(http, server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 0,
                                                        "return_token_ids": True})  # fmt: skip
    choices = [c["choices"][0] for c in chunks]
    assert choices[0]["prompt_token_ids"] == choice["prompt_token_ids"]
    assert [t for c in choices for t in c["token_ids"]] == choice["token_ids"]

    reply = chat(http, server, "Hi", max_tokens=5, return_token_ids=True)
    opening = tokenize(http, server, "<|im_start|>assistant\n")
    assert reply["prompt_token_ids"][-len(opening) :] == opening
    assert len(reply["prompt_token_ids"]) == reply["usage"]["prompt_tokens"]
    ids = reply["choices"][0]["token_ids"]
    assert (
        post(http, server, "/detokenize", {"tokens": ids})["prompt"]
        == reply["choices"][0]["message"]["content"]
    )
    chunks = streamed(http, server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0, "return_token_ids": True})  # fmt: skip
    assert chunks[0]["prompt_token_ids"] == reply["prompt_token_ids"]
    assert [t for c in chunks for ch in c["choices"] for t in ch.get("token_ids", [])] == ids


def cumulative(choice: dict) -> float:
    return sum(choice["logprobs"]["token_logprobs"])


@pytest.mark.parametrize("n", [1, 2])
def test_best_of_returns_the_most_likely(http, server, n):
    sampled = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 1.0, "seed": 1234, "logprobs": 0}
    every = complete(http, server, **sampled, n=4)
    ranked = sorted(every["choices"], key=cumulative, reverse=True)
    assert len({c["text"] for c in ranked}) > 1  # the samples differ, so picking means something
    best = complete(http, server, **sampled, n=n, best_of=4)
    assert [c["text"] for c in best["choices"]] == [c["text"] for c in ranked[:n]]
    assert [c["index"] for c in best["choices"]] == list(range(n))
    assert best["usage"]["completion_tokens"] == every["usage"]["completion_tokens"]  # all four were made
    without_logprobs = complete(http, server, **{**sampled, "logprobs": None}, n=1, best_of=4)
    assert without_logprobs["choices"][0]["text"] == ranked[0]["text"]
    assert without_logprobs["choices"][0]["logprobs"] is None

    messages = [{"role": "user", "content": "Tell me a story."}]
    chat_sampled = {"messages": messages, "max_tokens": 8, "temperature": 1.0, "seed": 99, "logprobs": True}
    every_chat = post(http, server, "/v1/chat/completions", {**chat_sampled, "n": 3})["choices"]
    scores = [sum(t["logprob"] for t in c["logprobs"]["content"]) for c in every_chat]
    best_chat = post(http, server, "/v1/chat/completions", {**chat_sampled, "best_of": 3})["choices"]
    assert best_chat[0]["message"]["content"] == every_chat[scores.index(max(scores))]["message"]["content"]


def test_best_of_errors(http, server):
    below = post(http, server, "/v1/completions", {"prompt": PROMPT, "n": 3, "best_of": 2}, 400)
    assert below["error"]["param"] == "best_of"
    streamed_best = post(
        http, server, "/v1/completions", {"prompt": PROMPT, "best_of": 2, "stream": True}, 400
    )
    assert streamed_best["error"]["param"] == "best_of"
    chat_below = post(http, server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                             "n": 2, "best_of": 1}, 400)  # fmt: skip
    assert chat_below["error"]["param"] == "best_of"


@pytest.mark.parametrize("field", ["use_beam_search", "length_penalty", "logits_processors", "guided_regex"])
def test_unsupported_vllm_fields_are_named(http, server, field):
    body = post(http, server, "/v1/completions", {"prompt": PROMPT, field: True}, 400)
    assert body["error"]["param"] == field
