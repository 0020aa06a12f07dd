"""Issue 10, tried as an attacker and a careless client would: each case fails on a server without the
hardening, and each is followed by a normal request that must still work (the server, other sessions and
accepted work survive).

Servers: the session's `server` (defaults) plus three started here: `keyed` (--api-key), `limited`
(--max-audio-seconds 60, --allowed-origins https://app.example, --trust-request-chat-template) and `fresh`
(--shutdown-timeout 30: the memory test measures it first, then the SIGTERM test stops it, so it comes last).
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
import soundfile as sf
import websockets

from clients.realtime_client import chunks, pcm16_base64
from clients.server_process import ServerProcess
from tests.conftest import LiveServer, metric, start_server
from tests.speech import synthesize, wer
from tests.test_http_errors import LLM, MESSAGES, assert_error, assert_still_serving
from tests.test_realtime_errors import (
    MODEL,
    SENTENCE,
    append,
    openai_session,
    recv_json,
    vllm_utterance_works,
)

KEY = "sk-hostile-key"
APP_ORIGIN, EVIL_ORIGIN = "https://app.example", "https://evil.example"
S = "@LONE@"  # stands for a lone surrogate, written into JSON text as the six characters \ud800


def surrogate_json(obj: Any) -> str:
    """JSON text for `obj` with every @LONE@ as an escaped lone surrogate: valid JSON, invalid Unicode."""
    return json.dumps(obj).replace(S, "\\ud800")


def same_param(actual: str | None, expected: str) -> bool:
    """`a[0].b` and `a.0.b` name the same field."""
    return actual is not None and re.sub(r"\[(\d+)\]", r".\1", actual) == re.sub(
        r"\[(\d+)\]", r".\1", expected
    )


def managed(args: list[str], log_name: str) -> Iterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if k != "RTSERVE_API_KEY"}
    process = start_server(["--asr", MODEL, *args], log_name, env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    yield from managed(["--llm", "none", "--embed", "none", "--api-key", KEY], "server-hostile-key.log")


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProcess]:
    args = ["--max-audio-seconds", "60", "--allowed-origins", APP_ORIGIN, "--trust-request-chat-template"]
    yield from managed(args, "server-hostile-limits.log")


@pytest.fixture(scope="module")
def fresh() -> Iterator[ServerProcess]:
    yield from managed(["--shutdown-timeout", "30"], "server-hostile-fresh.log")


# ---- raw HTTP / WebSocket, for what a well-behaved client library will not send ----


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except (ConnectionResetError, TimeoutError):
        return b""


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def raw_http(base_url: str, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send `request` bytes as they are; read one response (headers only for a 101)."""
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):  # the server answered before reading it all
            pass
        data = b""
        while b"\r\n\r\n" not in data and (chunk := _recv(sock)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1."), data[:200]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        status = int(lines[0].split()[1])
        if status != 101:
            length = int(headers.get("content-length", -1))
            while (length < 0 or len(body) < length) and (chunk := _recv(sock)):
                body += chunk
        if headers.get("transfer-encoding") == "chunked":
            body = _dechunk(body)
        return RawResponse(status, headers, body if status != 101 else b"")


def upgrade_request(base_url: str, path: str, *extra: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1".encode(),
        f"Host: {urlsplit(base_url).netloc}".encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + key,
        b"Sec-WebSocket-Version: 13",
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def ws_frame(text: str) -> bytes:
    """One masked text frame, as a client sends it."""
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return head + mask + masked.to_bytes(n, "big")


def assert_error_body(raw: RawResponse, status: int, code: str | None = None) -> dict:
    assert raw.status == status, (raw.status, raw.body[:300])
    assert raw.headers.get("content-type", "").startswith("application/json"), raw.headers
    error = json.loads(raw.body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


# ---- 1. a lone surrogate: a 400 / an error event naming the field, and nothing dies ----

SURROGATE_BODIES: dict[str, tuple[str, dict, set[str]]] = {
    "chat message": ("/v1/chat/completions", {"model": LLM, "messages": [{"role": "user", "content": f"a{S}b"}], "max_tokens": 2}, {"messages[0].content"}),
    "chat content part": ("/v1/chat/completions", {"model": LLM, "messages": [{"role": "user", "content": [{"type": "text", "text": f"a{S}"}]}], "max_tokens": 2}, {"messages[0].content[0].text"}),
    "chat stop": ("/v1/chat/completions", {"model": LLM, "messages": MESSAGES, "max_tokens": 2, "stop": [S]}, {"stop", "stop[0]"}),
    "completion prompt": ("/v1/completions", {"model": LLM, "prompt": f"a{S}b", "max_tokens": 2}, {"prompt"}),
    "completion prompt list": ("/v1/completions", {"model": LLM, "prompt": ["ok", f"a{S}"], "max_tokens": 2}, {"prompt", "prompt[1]"}),
    "generate text": ("/generate", {"text": f"a{S}b", "sampling_params": {"max_new_tokens": 2}}, {"text"}),
    "tokenize prompt": ("/tokenize", {"prompt": f"a{S}b"}, {"prompt"}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SURROGATE_BODIES))
def test_lone_surrogate_over_http_is_a_400_naming_the_field(server, http, case):
    path, body, params = SURROGATE_BODIES[case]
    r = http.post(
        f"{server.base_url}{path}",
        data=surrogate_json(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    error = assert_error(r, 400)
    assert any(same_param(error["param"], p) for p in params), error
    assert_still_serving(http, server.base_url)


TRANSCRIPTION_UPDATE = {
    "type": "session.update",
    "event_id": "evt_bad",
    "session": {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None,
                            "transcription": {"model": MODEL, "prompt": f"Coffee{S}"}}},
    },
}  # fmt: skip
USER_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"Hi{S}"}]}
# name: (URL query, frame, OpenAI: error.param / vLLM: a word the message must hold)
SURROGATE_EVENTS: dict[str, tuple[str, str, str]] = {
    "transcription prompt": ("?intent=transcription", surrogate_json(TRANSCRIPTION_UPDATE), "session.audio.input.transcription.prompt"),
    "unknown event's event_id": ("?intent=transcription", surrogate_json({"type": "nope.nope", "event_id": f"evt{S}"}), "event_id"),
    "unknown event's type": ("?intent=transcription", surrogate_json({"type": f"nope{S}", "event_id": "evt_bad"}), "type"),
    "item text": ("?intent=conversation", surrogate_json({"type": "conversation.item.create", "event_id": "evt_bad", "item": USER_ITEM}), "item.content[0].text"),
    "instructions": ("?intent=conversation", surrogate_json({"type": "session.update", "event_id": "evt_bad", "session": {"type": "realtime", "instructions": f"Be{S}brief"}}), "session.instructions"),
    "vllm model": ("", surrogate_json({"type": "session.update", "model": f"whisper{S}"}), "model"),
    "vllm unknown event's type": ("", surrogate_json({"type": f"nope{S}"}), "type"),
}  # fmt: skip


async def openai_turn_is_transcribed(ws) -> None:
    """A manually committed turn at 16 kHz (the session's configuration from before the bad event)."""
    for chunk in chunks(synthesize(SENTENCE), 16000, 250):
        await ws.send(append(pcm16_base64(chunk)))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    while (event := await recv_json(ws))["type"] != "conversation.item.input_audio_transcription.completed":
        assert event["type"] != "error", event
    assert wer(SENTENCE, event["transcript"]) < 0.2, event["transcript"]


async def conversation_answers(ws) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 4}}))
    while (event := await recv_json(ws, timeout=120))["type"] != "response.done":
        assert event["type"] != "error", event
    assert event["response"]["status"] in ("completed", "incomplete"), event
    assert event["response"]["output"][0]["content"][0]["text"], event


@pytest.mark.parametrize("case", list(SURROGATE_EVENTS))
async def test_lone_surrogate_on_realtime_is_an_error_event(server, case):
    query, frame, field = SURROGATE_EVENTS[case]
    async with websockets.connect(f"{server.ws_url}/v1/realtime{query}") as ws:
        await recv_json(ws)  # session.created
        if query == "?intent=transcription":
            await ws.send(openai_session(transcription={"model": MODEL}))
            assert (await recv_json(ws))["type"] == "session.updated"
        elif not query:
            await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await ws.send(frame)
        event = await recv_json(ws)  # before the fix: the socket closes with 1000 and no event
        assert event["type"] == "error", event
        if query:
            error = event["error"]
            assert error["type"] == "invalid_request_error" and error["code"] and error["message"], error
            assert same_param(error["param"], field), error
            if '"evt_bad"' in frame:
                assert error["event_id"] == "evt_bad", error
        else:
            assert event == {"type": "error", "error": event["error"], "code": event["code"]}
            assert event["code"] and field in event["error"], event
        if query == "?intent=transcription":
            await openai_turn_is_transcribed(ws)
        elif query:
            await conversation_answers(ws)
        else:
            await vllm_utterance_works(ws)


# ---- 2. a non-ASCII API key is a 401, never a 500 ----


def test_non_ascii_api_key_over_http_is_401(keyed):
    for header in (b"Bearer \xff\xfe", "Bearer ключ".encode()):
        r = requests.get(f"{keyed.base_url}/v1/models", headers={"Authorization": header})
        assert_error(r, 401, code="invalid_api_key")
    ok = requests.get(f"{keyed.base_url}/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == [MODEL]


async def test_non_ascii_api_key_on_websocket_is_401(keyed):
    offers = [
        b"Authorization: Bearer \xff\xfe",
        "Authorization: Bearer ключ".encode(),
        "Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.ключ".encode(),
    ]
    for offer in offers:
        raw = await asyncio.to_thread(
            raw_http, keyed.base_url, upgrade_request(keyed.base_url, "/v1/realtime", offer)
        )
        assert_error_body(raw, 401, "invalid_api_key")
    ws_url = keyed.base_url.replace("http", "ws", 1) + "/v1/realtime"
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await vllm_utterance_works(ws)


# ---- 3. cheap requests that cost a lot ----


def audio_file(samples: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def transcribe(base_url: str, data: bytes, name: str) -> requests.Response:
    parts = [("model", (None, MODEL)), ("file", (name, data, "application/octet-stream"))]
    return requests.post(f"{base_url}/v1/audio/transcriptions", files=parts, timeout=120)


def test_decoded_duration_is_limited(limited):
    ten_minutes = audio_file(np.zeros(600 * 16000, dtype=np.float32), "FLAC")
    assert len(ten_minutes) < 1024 * 1024  # cheap to send, expensive to decode and transcribe
    started = time.monotonic()
    r = transcribe(limited.base_url, ten_minutes, "silence.flac")
    error = assert_error(r, 400, "file")
    assert time.monotonic() - started < 10
    assert re.search(r"second|duration|\b60\b", error["message"], re.IGNORECASE), error
    speech = transcribe(limited.base_url, audio_file(synthesize(SENTENCE), "WAV"), "speech.wav")
    assert speech.status_code == 200 and wer(SENTENCE, speech.json()["text"]) < 0.2, speech.text


def test_silence_transcribes_to_nothing(server, http):
    r = transcribe(server.base_url, audio_file(np.zeros(20 * 16000, dtype=np.float32), "WAV"), "silence.wav")
    assert r.status_code == 200 and r.json()["text"].strip() == "", r.text  # no "you you you"
    speech = transcribe(server.base_url, audio_file(synthesize(SENTENCE), "WAV"), "speech.wav")
    assert speech.status_code == 200 and wer(SENTENCE, speech.json()["text"]) < 0.2, speech.text


PROMPT_FLOODS = {
    "1000 prompts": {"prompt": ["hello"] * 1000},
    "64 prompts x n=16": {"prompt": ["hello"] * 64, "n": 16},
}


@pytest.mark.parametrize("case", list(PROMPT_FLOODS))
def test_prompts_times_n_is_capped(server, http, case):
    body = {"model": LLM, "max_tokens": 1, **PROMPT_FLOODS[case]}
    r = http.post(f"{server.base_url}/v1/completions", json=body)
    assert r.status_code == 400, r.text[:300]  # before the fix: every sequence runs
    assert assert_error(r, 400)["param"] in ("prompt", "n"), r.text
    ok = http.post(
        f"{server.base_url}/v1/completions",
        json={"model": LLM, "prompt": ["hello", "world"], "n": 2, "max_tokens": 2},
    )
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 4, ok.text


TEMPLATE = "<<{{ messages[0]['content'] }}>>"
UNTRUSTED_TEMPLATES = {
    "chat chat_template": ("/v1/chat/completions", {"model": LLM, "messages": MESSAGES, "max_tokens": 2, "chat_template": TEMPLATE}),
    "chat chat_template_kwargs": ("/v1/chat/completions", {"model": LLM, "messages": MESSAGES, "max_tokens": 2, "chat_template_kwargs": {"chat_template": TEMPLATE}}),
    "tokenize chat_template_kwargs": ("/tokenize", {"messages": MESSAGES, "chat_template_kwargs": {"chat_template": TEMPLATE}}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(UNTRUSTED_TEMPLATES))
def test_request_chat_template_needs_trust(server, http, case):
    path, body = UNTRUSTED_TEMPLATES[case]
    error = assert_error(http.post(f"{server.base_url}{path}", json=body), 400)
    assert "chat_template" in (error["param"] or ""), error
    assert_still_serving(http, server.base_url)


def test_trusted_chat_template_renders_off_the_loop(limited):
    url = limited.base_url
    kwargs = {"chat_template": TEMPLATE}
    rendered = requests.post(f"{url}/tokenize", json={"messages": MESSAGES, "chat_template_kwargs": kwargs})
    plain = requests.post(f"{url}/tokenize", json={"prompt": "<<Hi>>", "add_special_tokens": False})
    assert rendered.status_code == 200 and rendered.json()["tokens"] == plain.json()["tokens"], rendered.text
    top_level = requests.post(f"{url}/v1/chat/completions", json={"model": LLM, "messages": MESSAGES, "chat_template": TEMPLATE, "max_tokens": 2})  # fmt: skip
    assert top_level.status_code == 200, top_level.text
    assert top_level.json()["usage"]["prompt_tokens"] == len(plain.json()["tokens"])
    slow = (
        "{% for i in range(10000) %}{% for j in range(4000) %}{% endfor %}{% endfor %}Hi"  # 40M jinja steps
    )
    body = {
        "model": LLM,
        "messages": MESSAGES,
        "max_tokens": 2,
        "chat_template_kwargs": {"chat_template": slow},
    }
    with ThreadPoolExecutor(1) as pool:
        heavy = pool.submit(requests.post, f"{url}/v1/chat/completions", json=body, timeout=120)
        latencies = []
        while not heavy.done():
            started = time.monotonic()
            assert requests.get(f"{url}/health", timeout=30).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        r = heavy.result()
    assert max(latencies, default=0.0) < 0.5, (
        f"/health stalled {max(latencies):.2f}s while a template rendered"
    )
    if r.status_code != 200:  # a time bound may cut it short
        assert "chat_template" in (assert_error(r, 400)["param"] or ""), r.text
    assert_still_serving(requests.Session(), url)


# ---- 4. cross-site requests ----


async def test_websocket_from_another_site_is_refused(server):
    url = f"{server.ws_url}/v1/realtime"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=EVIL_ORIGIN):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(url) as ws:  # no Origin: not a browser
        assert (await recv_json(ws))["type"] == "session.created"
    async with websockets.connect(url, origin=server.base_url) as ws:  # the server's own page
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await vllm_utterance_works(ws)


JSON_WITHOUT_JSON_TYPE = {
    "chat as text/plain": ("/v1/chat/completions", "text/plain", {"model": LLM, "messages": MESSAGES, "max_tokens": 2}),
    "chat as text/plain utf-8": ("/v1/chat/completions", "text/plain;charset=UTF-8", {"model": LLM, "messages": MESSAGES, "max_tokens": 2}),
    "completion as form": ("/v1/completions", "application/x-www-form-urlencoded", {"model": LLM, "prompt": "hi", "max_tokens": 2}),
    "generate as text/plain": ("/generate", "text/plain", {"text": "hi", "sampling_params": {"max_new_tokens": 2}}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(JSON_WITHOUT_JSON_TYPE))
def test_json_must_say_application_json(server, http, case):
    path, content_type, body = JSON_WITHOUT_JSON_TYPE[case]
    r = http.post(
        f"{server.base_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": content_type}
    )
    assert_error(r, 415)
    assert_still_serving(http, server.base_url)


async def test_cors_and_websocket_origins_follow_allowed_origins(limited):
    chat_url = f"{limited.base_url}/v1/chat/completions"
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    preflight = requests.options(chat_url, headers={"Origin": APP_ORIGIN, **ask})
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN, preflight.headers
    assert "POST" in preflight.headers.get("Access-Control-Allow-Methods", ""), preflight.headers
    assert "content-type" in preflight.headers.get("Access-Control-Allow-Headers", "").lower(), (
        preflight.headers
    )
    foreign = requests.options(chat_url, headers={"Origin": EVIL_ORIGIN, **ask})
    assert foreign.headers.get("Access-Control-Allow-Origin") not in (EVIL_ORIGIN, "*"), foreign.headers
    body = {"model": LLM, "messages": MESSAGES, "max_tokens": 2}
    ok = requests.post(chat_url, json=body, headers={"Origin": APP_ORIGIN})
    assert ok.status_code == 200 and ok.headers.get("Access-Control-Allow-Origin") == APP_ORIGIN, ok.headers
    url = limited.base_url.replace("http", "ws", 1) + "/v1/realtime"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, origin=EVIL_ORIGIN):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(url, origin=APP_ORIGIN) as ws:
        assert (await recv_json(ws))["type"] == "session.created"


# ---- 5. a WebSocket client that never reads loses its TCP connection ----

TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # linux/tcp_states.h


def flood_without_reading(server: LiveServer, limit_s: float) -> float | None:
    """A transcription session over a raw socket with a tiny receive buffer that sends session.updates (each
    answered by a session.updated) and short appends and never reads. Seconds until the server dropped the
    TCP connection, or None if it still held it after `limit_s`."""
    url = urlsplit(server.base_url)
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((url.hostname, url.port))
        auth = [f"Authorization: Bearer {server.api_key}".encode()] if server.api_key else []
        sock.sendall(upgrade_request(server.base_url, "/v1/realtime?intent=transcription", *auth))
        handshake = b""
        while not handshake.endswith(b"\r\n\r\n"):
            handshake += sock.recv(1)  # the handshake only: not one event is read
        assert handshake.startswith(b"HTTP/1.1 101"), handshake
        update = ws_frame(openai_session(transcription={"model": MODEL, "prompt": "coffee " * 150}))
        audio = ws_frame(append(pcm16_base64(np.zeros(320, dtype=np.float32))))
        frames, pending = itertools.cycle([update, audio]), b""
        sock.setblocking(False)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < limit_s:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state in (TCP_CLOSE, TCP_CLOSE_WAIT) or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return elapsed
            pending = pending or next(frames)  # whole frames only: a torn one would be a protocol error
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                time.sleep(0.05)
            except OSError:  # reset or broken pipe: dropped
                return elapsed
        return None
    finally:
        sock.close()


async def test_client_that_never_reads_is_disconnected(server):
    flood = asyncio.create_task(asyncio.to_thread(flood_without_reading, server, 30.0))
    await asyncio.sleep(1.0)
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:  # meanwhile, others are served
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await vllm_utterance_works(ws)
    assert await flood is not None, "the server still holds the TCP connection of a client that never reads"
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await vllm_utterance_works(ws)


# ---- 8. smaller things ----

PARSER_ERRORS = {
    "bad content-length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
    b"Content-Length: abc\r\n\r\n{}",
    "bad method": b"G(T /health HTTP/1.1\r\nHost: h\r\n\r\n",
    "100 KB header": b"GET /health HTTP/1.1\r\nHost: h\r\nX-Filler: " + b"a" * 100_000 + b"\r\n\r\n",
}


def log_size(server: LiveServer) -> int:
    path = server.process.log_path if server.process else None
    return path.stat().st_size if path and path.exists() else 0


def log_since(server: LiveServer, offset: int) -> str:
    path = server.process.log_path if server.process else None
    if not path or not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@pytest.mark.parametrize("case", list(PARSER_ERRORS))
def test_parser_error_is_json_and_not_logged_as_an_error(server, http, case):
    offset = log_size(server)
    raw = raw_http(server.base_url, PARSER_ERRORS[case])
    assert 400 <= raw.status < 500
    assert_error_body(raw, raw.status)
    time.sleep(0.3)
    logged = log_since(server, offset)
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-2000:]
    assert_still_serving(http, server.base_url)


def test_static_miss_is_a_404_with_a_body(server, http):
    r = http.get(f"{server.base_url}/static/missing.js")
    assert r.status_code == 404 and r.content, (r.status_code, r.headers)
    assert not r.headers.get("Content-Type", "").startswith("application/octet-stream"), r.headers
    assert http.get(f"{server.base_url}/static/demo.js").status_code == 200


def test_demo_page_sends_security_headers(server, http):
    r = http.get(f"{server.base_url}/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "default-src" in r.headers.get("Content-Security-Policy", ""), r.headers
    assert r.headers.get("X-Content-Type-Options") == "nosniff", r.headers
    assert r.headers.get("X-Frame-Options") in ("DENY", "SAMEORIGIN"), r.headers


async def test_openai_session_update_on_a_vllm_session_is_an_error(server):
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))  # chooses vLLM's dialect
        await ws.send(openai_session(transcription={"model": MODEL}))
        error = await recv_json(ws, timeout=10)  # before the fix: silently ignored
        assert error == {"type": "error", "error": error["error"], "code": error["code"]}
        assert error["code"] and error["error"], error
        await vllm_utterance_works(ws)


# ---- 7. memory comes back after a burst (a fresh server: its first burst is what grows) ----

IDLE_RSS_SLACK_MB = 64


def engine_idle(base_url: str) -> bool:
    text = requests.get(f"{base_url}/metrics").text
    names = ("llm_requests_running", "llm_requests_waiting", "kv_cache_blocks_used", "asr_windows_waiting",
             "asr_windows_running")  # fmt: skip
    return all(metric(text, f"rtserve_{name}") == 0 for name in names)


def chat_burst_request(base_url: str, i: int) -> int:
    body = {"model": LLM, "messages": [{"role": "user", "content": f"Tell story {i}."}], "max_tokens": 24,
            "ignore_eos": True, "stream": i % 3 == 0}  # fmt: skip
    with requests.post(f"{base_url}/v1/chat/completions", json=body, stream=True, timeout=120) as r:
        for n, _ in enumerate(r.iter_lines()):
            if body["stream"] and n == 4 and i % 2 == 0:
                break  # abandoned mid-stream
        return r.status_code


def test_idle_memory_returns_after_a_burst(fresh):
    noise = (np.random.default_rng(0).standard_normal(10 * 16000) * 0.05).astype(np.float32)
    wav = audio_file(noise, "WAV")
    assert chat_burst_request(fresh.base_url, 0) == 200 and transcribe(fresh.base_url, wav, "a.wav").ok
    time.sleep(2)
    before, _ = fresh.memory_mb()
    with ThreadPoolExecutor(27) as pool:
        chats = [pool.submit(chat_burst_request, fresh.base_url, i) for i in range(24)]
        uploads = [pool.submit(transcribe, fresh.base_url, wav, "a.wav") for _ in range(3)]
        assert all(f.result() == 200 for f in chats) and all(f.result().ok for f in uploads)
    deadline = time.monotonic() + 30
    while not engine_idle(fresh.base_url):
        assert time.monotonic() < deadline, "sequences, KV blocks or ASR windows were not given back"
        time.sleep(0.5)
    time.sleep(3)
    after, peak = fresh.memory_mb()
    assert after - before < IDLE_RSS_SLACK_MB, f"idle RSS {before:.0f} -> {after:.0f} MiB (peak {peak:.0f})"
    assert_still_serving(requests.Session(), fresh.base_url)


# ---- 6. SIGTERM lets accepted requests finish (stops `fresh`, so it runs last) ----


def test_sigterm_lets_accepted_requests_finish(fresh):
    url = f"{fresh.base_url}/v1/chat/completions"
    body = {"model": LLM, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 200,
            "ignore_eos": True, "temperature": 0}  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        whole = pool.submit(requests.post, url, json=body, timeout=120)
        stream = requests.post(url, json={**body, "stream": True}, stream=True, timeout=120)
        lines = (line for line in stream.iter_lines() if line)
        first = next(lines)
        deadline = time.monotonic() + 30
        while metric(requests.get(f"{fresh.base_url}/metrics").text, "rtserve_llm_requests_running") < 2:
            assert time.monotonic() < deadline, "both requests should be running"
            time.sleep(0.05)
        fresh.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            late = requests.post(url, json={**body, "max_tokens": 2}, timeout=10)
        except requests.ConnectionError:
            pass  # refused: the listener is closed
        else:
            assert_error(late, 503)
        rest = [first, *lines]
        r = whole.result()
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["choices"][0]["message"]["content"] and answer["usage"]["completion_tokens"] == 200
    assert rest[-1] == b"data: [DONE]", rest[-3:]
    events = [json.loads(line.removeprefix(b"data: ")) for line in rest[:-1]]
    assert all("error" not in e for e in events), events[-2:]
    assert any(e["choices"] and e["choices"][0]["finish_reason"] == "length" for e in events), events[-2:]
    assert fresh.proc.wait(timeout=45) == 0
