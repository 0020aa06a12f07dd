"""Bad input gets the right status and an OpenAI-shaped error, and the server keeps serving after each."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from tests.conftest import start_server

LLM = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Hi"}]


def assert_error(
    response: requests.Response, status: int, param: str | None = None, code: str | None = None
) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_still_serving(http: requests.Session, base_url: str) -> None:
    r = http.post(
        f"{base_url}/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2, "temperature": 0}
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
    assert http.get(f"{base_url}/health").status_code == 200


# ------------------------------------------------------------------------------------------- JSON routes


@dataclass
class Bad:
    path: str
    body: Any  # dict/list: sent as JSON; bytes: sent raw
    status: int
    param: str | None = None
    code: str | None = None
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


def chat(**fields: Any) -> dict:
    return {"model": LLM, "messages": MESSAGES, **fields}


LONG = "hello " * 3000  # ~3000 tokens > max_model_len 2048

BAD_JSON_REQUESTS: dict[str, Bad] = {
    "deeply nested json": Bad("/v1/chat/completions", b"[" * 100_000, 400, code="invalid_json"),
    "body over the json limit": Bad("/v1/chat/completions", b'"' + b"x" * (9 * 1024 * 1024) + b'"', 413),
    "seed out of range": Bad("/v1/chat/completions", chat(seed=10**30), 400, "seed"),
    "malformed json": Bad("/v1/chat/completions", b'{"messages": [', 400, code="invalid_json"),
    "empty body": Bad("/v1/chat/completions", b"", 400, code="invalid_json"),
    "json array body": Bad("/v1/chat/completions", [1, 2], 400, code="invalid_json"),
    "missing messages": Bad("/v1/chat/completions", {"model": LLM}, 400, "messages", "missing_required_parameter"),
    "messages not a list": Bad("/v1/chat/completions", chat(messages="hi"), 400, "messages"),
    "empty messages": Bad("/v1/chat/completions", chat(messages=[]), 400, "messages"),
    "bad role": Bad("/v1/chat/completions", chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages[0].role"),
    "content wrong type": Bad("/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    "temperature wrong type": Bad("/v1/chat/completions", chat(temperature="hot"), 400, "temperature"),
    "temperature out of range": Bad("/v1/chat/completions", chat(temperature=5), 400, "temperature"),
    "top_p zero": Bad("/v1/chat/completions", chat(top_p=0), 400, "top_p"),
    "n zero": Bad("/v1/chat/completions", chat(n=0), 400, "n"),
    "max_tokens zero": Bad("/v1/chat/completions", chat(max_tokens=0), 400, "max_tokens"),
    "max_tokens past context": Bad("/v1/chat/completions", chat(max_tokens=100_000), 400, "max_tokens", "context_length_exceeded"),
    "prompt past context": Bad("/v1/chat/completions", chat(messages=[{"role": "user", "content": LONG}]), 400, "messages", "context_length_exceeded"),
    "stream_options without stream": Bad("/v1/chat/completions", chat(stream_options={"include_usage": True}), 400, "stream_options"),
    "unknown model": Bad("/v1/chat/completions", chat(model="gpt-4o"), 404, "model", "model_not_found"),
    "tool parameters not a schema": Bad("/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]), 400, "tools[0].function.parameters", "invalid_schema"),
    "tool_choice names no tool": Bad("/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}}), 400, "tool_choice"),
    "tool_choice without tools": Bad("/v1/chat/completions", chat(tool_choice="required"), 400, "tool_choice"),
    "json schema that cannot compile": Bad("/v1/chat/completions", chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}), 400, "response_format.json_schema.schema"),
    "audio output": Bad("/v1/chat/completions", chat(modalities=["text", "audio"]), 400, "modalities"),
    "image part": Bad("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]), 400, "messages[0].content[0].type"),
    "audio part": Bad("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]), 400, "messages[0].content[0].type"),
    "tool_calls on a user message": Bad("/v1/chat/completions", chat(messages=[{"role": "user", "content": "x", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]), 400, "messages[0].tool_calls"),
    "unrecognized field": Bad("/v1/chat/completions", chat(temprature=0.5), 400, "temprature", "unrecognized_argument"),
    "logit_bias bad key": Bad("/v1/chat/completions", chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    "logit_bias outside vocab": Bad("/v1/chat/completions", chat(logit_bias={"99999999": 1}), 400, "logit_bias"),
    "top_logprobs too many": Bad("/v1/chat/completions", chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    "top_logprobs without logprobs": Bad("/v1/chat/completions", chat(top_logprobs=2), 400, "top_logprobs"),
    "stop_token_ids outside vocab": Bad("/v1/chat/completions", chat(stop_token_ids=[-1]), 400, "stop_token_ids"),
    "empty stop string": Bad("/v1/chat/completions", chat(stop=[""]), 400, "stop"),
    "completion suffix": Bad("/v1/completions", {"model": LLM, "prompt": "x", "suffix": "y"}, 400, "suffix", "unsupported_parameter"),
    "completion empty prompt list": Bad("/v1/completions", {"model": LLM, "prompt": []}, 400, "prompt"),
    "completion prompt wrong type": Bad("/v1/completions", {"model": LLM, "prompt": 42}, 400, "prompt"),
    "completion token outside vocab": Bad("/v1/completions", {"model": LLM, "prompt": [1, 99999999]}, 400, "prompt"),
    "completion best_of below n": Bad("/v1/completions", {"model": LLM, "prompt": "x", "n": 2, "best_of": 1}, 400, "best_of"),
    "completion prompt_logprobs streamed": Bad("/v1/completions", {"model": LLM, "prompt": "x", "prompt_logprobs": 1, "stream": True}, 400, "prompt_logprobs"),
    "completion beam search": Bad("/v1/completions", {"model": LLM, "prompt": "x", "use_beam_search": True}, 400, "use_beam_search", "unrecognized_argument"),
    "completion prompt past context": Bad("/v1/completions", {"model": LLM, "prompt": LONG, "max_tokens": 4}, 400, "max_tokens", "context_length_exceeded"),
    "generate without prompt": Bad("/generate", {"sampling_params": {"max_new_tokens": 2}}, 400, "text"),
    "generate with both prompts": Bad("/generate", {"text": "x", "input_ids": [1]}, 400, "text"),
    "generate regex": Bad("/generate", {"text": "x", "sampling_params": {"regex": "(a+"}}, 400, "sampling_params.regex"),
    "generate prompt past context": Bad("/generate", {"text": LONG}, 400, "text", "context_length_exceeded"),
    "generate max_new_tokens zero": Bad("/generate", {"text": "x", "sampling_params": {"max_new_tokens": 0}}, 400, "max_new_tokens"),
    "generate params count mismatch": Bad("/generate", {"text": ["a", "b"], "sampling_params": [{}]}, 400, "sampling_params"),
    "generate image": Bad("/generate", {"text": "x", "image_data": "abc"}, 400, "image_data"),
    "tokenize nothing": Bad("/tokenize", {}, 400, "prompt"),
    "tokenize unknown model": Bad("/tokenize", {"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    "detokenize outside vocab": Bad("/detokenize", {"tokens": [99999999]}, 400, "tokens"),
    "unknown route": Bad("/v1/nothing-here", {}, 404, code="not_found"),
    "unknown model route": Bad("/v1/models/nope", None, 404, code="model_not_found", method="GET"),
    "wrong method": Bad("/v1/chat/completions", None, 405, code="method_not_allowed", method="GET"),
    "wrong method on health": Bad("/health", {}, 405, code="method_not_allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_JSON_REQUESTS.values(), ids=BAD_JSON_REQUESTS.keys())
def test_bad_json_request(server, http, case: Bad):
    url = f"{server.base_url}{case.path}"
    if case.body is None:
        response = http.request(case.method, url)
    elif isinstance(case.body, bytes):
        response = http.request(
            case.method, url, data=case.body, headers={"Content-Type": "application/json"}
        )
    else:
        response = http.request(case.method, url, json=case.body)
    assert_error(response, case.status, case.param, case.code)
    assert_still_serving(http, server.base_url)


def test_bad_stream_request_fails_before_streaming(server, http):
    r = http.post(f"{server.base_url}/v1/chat/completions", json=chat(stream=True, temperature=9))
    assert_error(r, 400, "temperature")
    assert_still_serving(http, server.base_url)


def test_openai_client_raises_typed_errors(openai_client, server, http):
    with pytest.raises(openai.NotFoundError) as not_found:
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.chat.completions.create(model=LLM, messages=MESSAGES, temperature=3)
    assert bad.value.param == "temperature"
    assert_still_serving(http, server.base_url)


# ------------------------------------------------------------------------------------------- audio uploads


def wav_bytes(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(buffer, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


@dataclass
class BadUpload:
    fields: dict[str, Any]
    status: int
    param: str | None = None
    code: str | None = None
    file: bytes | None = field(default_factory=wav_bytes)
    path: str = "/v1/audio/transcriptions"


TINY = {"model": "whisper-tiny.en"}
BAD_UPLOADS: dict[str, BadUpload] = {
    "no file": BadUpload(TINY, 400, "file", "missing_required_parameter", file=None),
    "no model": BadUpload({}, 400, "model", "missing_required_parameter"),
    "unknown model": BadUpload({"model": "whisper-1"}, 404, "model", "model_not_found"),
    "empty file": BadUpload(TINY, 400, "file", "invalid_audio", file=b""),
    "undecodable file": BadUpload(TINY, 400, "file", "invalid_audio", file=b"this is not audio" * 100),
    "truncated wav": BadUpload(TINY, 400, "file", "invalid_audio", file=wav_bytes()[:30]),
    "word timestamps": BadUpload({**TINY, "response_format": "verbose_json", "timestamp_granularities[]": "word"}, 400, "timestamp_granularities", "unsupported_parameter"),
    "bad response_format": BadUpload({**TINY, "response_format": "xml"}, 400, "response_format"),
    "temperature out of range": BadUpload({**TINY, "temperature": "2"}, 400, "temperature"),
    "temperature not a number": BadUpload({**TINY, "temperature": "warm"}, 400, "temperature"),
    "language on english model": BadUpload({**TINY, "language": "fr"}, 400, "language"),
    "unknown language": BadUpload({"model": "whisper-base", "language": "klingon"}, 400, "language"),
    "stream with srt": BadUpload({**TINY, "stream": "true", "response_format": "srt"}, 400, "stream"),
    "unrecognized field": BadUpload({**TINY, "speed": "2"}, 400, "speed", "unrecognized_argument"),
    "translate on english model": BadUpload(TINY, 400, "model", path="/v1/audio/translations"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_UPLOADS.values(), ids=BAD_UPLOADS.keys())
def test_bad_upload(server, http, case: BadUpload):
    parts: list[tuple[str, tuple]] = [(name, (None, value)) for name, value in case.fields.items()]
    if case.file is not None:
        parts.append(("file", ("audio.wav", case.file, "audio/wav")))
    response = http.post(f"{server.base_url}{case.path}", files=parts)
    assert_error(response, case.status, case.param, case.code)
    assert_still_serving(http, server.base_url)


def test_upload_without_multipart(server, http):
    r = http.post(f"{server.base_url}/v1/audio/transcriptions", json={"model": "whisper-tiny.en"})
    assert_error(r, 400, code="invalid_content_type")
    assert_still_serving(http, server.base_url)


def test_oversize_upload_is_413(server, http):
    too_big = b"\0" * (26 * 1024 * 1024)  # the default limit is 25 MiB
    parts = [("model", (None, "whisper-tiny.en")), ("file", ("big.wav", too_big, "audio/wav"))]
    r = http.post(f"{server.base_url}/v1/audio/transcriptions", files=parts)
    assert_error(r, 413, "file", "file_too_large")
    assert_still_serving(http, server.base_url)


def test_good_upload_after_bad_ones(openai_client):
    result = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("tone.wav", wav_bytes())
    )
    assert isinstance(result.text, str)


# ------------------------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    """A second, small server started with --api-key (ASR only, so it loads in seconds)."""
    env = {k: v for k, v in os.environ.items() if k != "RTSERVE_API_KEY"}
    args = ["--llm", "none", "--embed", "none", "--asr", "whisper-tiny.en", "--api-key", "sk-test-key"]
    process = start_server(args, "server-api-key.log", env)
    try:
        yield process.base_url
    finally:
        process.stop()


def test_api_key_required(keyed_server):
    missing = requests.get(f"{keyed_server}/v1/models")
    assert_error(missing, 401, code="invalid_api_key")
    assert missing.headers.get("WWW-Authenticate") == "Bearer"
    wrong = requests.get(f"{keyed_server}/v1/models", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, code="invalid_api_key")
    not_bearer = requests.get(f"{keyed_server}/v1/models", headers={"Authorization": "Basic sk-test-key"})
    assert_error(not_bearer, 401, code="invalid_api_key")
    ok = requests.get(f"{keyed_server}/v1/models", headers={"Authorization": "Bearer sk-test-key"})
    assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == ["whisper-tiny.en"]
    # open routes
    assert requests.get(f"{keyed_server}/health").status_code == 200
    assert requests.get(f"{keyed_server}/metrics").status_code == 200


def test_api_key_with_openai_client(keyed_server):
    good = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="sk-test-key", max_retries=0)
    assert [m.id for m in good.models.list().data] == ["whisper-tiny.en"]
    bad = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # with no LLM served, chat names the reason
    with pytest.raises(openai.NotFoundError) as exc:
        good.chat.completions.create(model=LLM, messages=MESSAGES)
    assert "no LLM" in exc.value.message
