"""/v1/completions, SGLang's /generate, and the meta routes (models, tokenize, health, metrics)."""

from __future__ import annotations

import json

import requests

LLM = "smollm2-135m-instruct"
PROMPT = "The capital of France is"


def complete(openai_client, **kwargs):
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("max_tokens", 12)
    return openai_client.completions.create(model=LLM, temperature=0, **kwargs)


def sse_events(response: requests.Response) -> list:
    """The JSON payloads of an SSE stream, checking it ends with [DONE]."""
    lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


# ------------------------------------------------------------------------------------------- completions


def test_completion(openai_client):
    response = complete(openai_client)
    choice = response.choices[0]
    assert "paris" in choice.text.lower()
    assert choice.finish_reason in ("stop", "length")
    assert response.object == "text_completion"
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_completion_matches(openai_client):
    expected = complete(openai_client)
    chunks = list(complete(openai_client, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == expected.usage.completion_tokens


def test_echo(openai_client):
    plain = complete(openai_client, max_tokens=5)
    echoed = complete(openai_client, max_tokens=5, echo=True)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    streamed = "".join(
        c.choices[0].text for c in complete(openai_client, max_tokens=5, echo=True, stream=True)
    )
    assert streamed == echoed.choices[0].text


def test_logprobs_legacy_format(openai_client):
    response = complete(openai_client, max_tokens=5, logprobs=2)
    choice = response.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset[0] == 0
    for i in range(1, 5):
        assert lp.text_offset[i] == lp.text_offset[i - 1] + len(lp.tokens[i - 1])
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and token in top  # greedy: the chosen token is the top one
        assert abs(top[token] - logprob) < 1e-3


def test_n_and_batched_prompts(openai_client):
    response = complete(openai_client, prompt=[PROMPT, "One, two, three,"], n=2, max_tokens=6)
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    # greedy: the two choices of each prompt agree; the prompts differ
    assert response.choices[0].text == response.choices[1].text
    assert response.choices[2].text == response.choices[3].text
    assert response.choices[0].text != response.choices[2].text


def test_token_id_prompt(openai_client, server, http):
    ids = http.post(f"{server.base_url}/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    from_ids = complete(openai_client, prompt=ids)
    from_text = complete(openai_client)
    assert from_ids.choices[0].text == from_text.choices[0].text
    assert from_ids.usage.prompt_tokens == len(ids)


# ------------------------------------------------------------------------------------------- /generate


def generate(http, server, **body) -> requests.Response:
    return http.post(f"{server.base_url}/generate", json=body, timeout=300)


def test_generate_text(server, openai_client, http):
    r = generate(http, server, text=PROMPT, sampling_params={"max_new_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == complete(openai_client).choices[0].text
    meta = body["meta_info"]
    assert meta["completion_tokens"] == len(body["output_ids"]) > 0
    assert meta["prompt_tokens"] > 0 and meta["id"]
    assert meta["finish_reason"]["type"] in ("stop", "length")
    if meta["finish_reason"]["type"] == "length":
        assert meta["finish_reason"]["length"] == 12


def test_generate_input_ids_and_detokenize(server, http):
    ids = http.post(f"{server.base_url}/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    by_ids = generate(
        http, server, input_ids=ids, sampling_params={"max_new_tokens": 8, "temperature": 0}
    ).json()
    by_text = generate(
        http, server, text=PROMPT, sampling_params={"max_new_tokens": 8, "temperature": 0}
    ).json()
    assert by_ids["output_ids"] == by_text["output_ids"]
    detok = http.post(f"{server.base_url}/detokenize", json={"tokens": by_ids["output_ids"]}).json()
    assert detok["prompt"] == by_ids["text"]


def test_generate_batch_and_logprobs(server, http):
    body = generate(
        http,
        server,
        text=[PROMPT, "1, 2, 3,"],
        sampling_params={"max_new_tokens": 4, "temperature": 0, "ignore_eos": True},
        return_logprob=True,
        top_logprobs_num=2,
        return_text_in_logprobs=True,
    ).json()
    assert isinstance(body, list) and len(body) == 2
    for item in body:
        meta = item["meta_info"]
        assert len(meta["output_token_logprobs"]) == 4
        logprob, token_id, text = meta["output_token_logprobs"][0]
        assert logprob <= 0 and token_id == item["output_ids"][0] and isinstance(text, str)
        assert len(meta["output_top_logprobs"][0]) == 2
        assert meta["finish_reason"] == {"type": "length", "length": 4}


def test_generate_stream_is_cumulative(server, http):
    params = {"max_new_tokens": 10, "temperature": 0}
    expected = generate(http, server, text=PROMPT, sampling_params=params).json()
    with http.post(
        f"{server.base_url}/generate",
        json={"text": PROMPT, "sampling_params": params, "stream": True},
        stream=True,
        timeout=300,
    ) as r:
        events = sse_events(r)
    texts = [e["text"] for e in events]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == expected["text"]
    assert events[-1]["output_ids"] == expected["output_ids"]
    assert events[-1]["meta_info"]["finish_reason"] == expected["meta_info"]["finish_reason"]
    assert all(e["meta_info"]["finish_reason"] is None for e in events[:-1])


def test_generate_stop_string(server, http):
    params = {"max_new_tokens": 16, "temperature": 0}
    full = generate(http, server, text=PROMPT, sampling_params=params).json()["text"]
    stop = full.split()[1]
    body = generate(http, server, text=PROMPT, sampling_params={**params, "stop": [stop]}).json()
    assert body["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    assert body["text"] == full[: full.index(stop)]


# ------------------------------------------------------------------------------------------- meta routes


def test_tokenize_roundtrip(server, http):
    text = "Hello world, this is rtserve."
    tokenized = http.post(f"{server.base_url}/tokenize", json={"model": LLM, "prompt": text}).json()
    assert tokenized["count"] == len(tokenized["tokens"]) > 3
    assert tokenized["max_model_len"] >= 1024
    detok = http.post(f"{server.base_url}/detokenize", json={"model": LLM, "tokens": tokenized["tokens"]})
    assert detok.json()["prompt"] == text


def test_tokenize_messages_uses_the_chat_template(server, openai_client, http):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    tokenized = http.post(f"{server.base_url}/tokenize", json={"messages": messages}).json()
    usage = openai_client.chat.completions.create(model=LLM, messages=messages, max_tokens=1).usage
    assert tokenized["count"] == usage.prompt_tokens


def test_models(openai_client):
    ids = [m.id for m in openai_client.models.list().data]
    assert ids[0] == LLM
    assert "whisper-tiny.en" in ids and "whisper-base" in ids
    assert openai_client.models.retrieve(LLM).id == LLM


def test_health_and_version(server, http):
    assert http.get(f"{server.base_url}/health").status_code == 200
    assert http.get(f"{server.base_url}/version").json()["version"]


def test_metrics(server, openai_client, http):
    complete(openai_client, max_tokens=2)
    r = http.get(f"{server.base_url}/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    for name in (
        "rtserve_llm_requests_waiting",
        "rtserve_llm_requests_running",
        "rtserve_llm_max_batch_size",
        "rtserve_kv_cache_usage_ratio",
        "rtserve_generation_tokens_per_second",
        "rtserve_asr_windows_total",
    ):
        assert name in values
    assert values["rtserve_llm_requests_finished_total"] >= 1
    assert values["rtserve_generation_tokens_total"] >= 2
    assert values["rtserve_prompt_tokens_total"] >= 1
    assert "# TYPE rtserve_llm_requests_finished_total counter" in r.text
