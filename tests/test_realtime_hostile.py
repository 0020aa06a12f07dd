"""Hostile and careless /v1/realtime clients, in process with a fake engine (issue 10; the live-server cases
are in tests/test_hostile_input.py): text that is not valid Unicode, the other dialect's session.update, an
event the outbox cannot encode, and a client that never reads. After each, the session (or the server)
still works. Also: shutdown with an engine that drains (refuses new requests) after the sessions close."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest
import websockets
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.errors import EngineStoppedError
from engine.request import TranscriptionRequest
from realtime import protocol_openai as oa
from realtime import routes as realtime_routes
from realtime.limits import RealtimeLimits
from realtime.outbox import Outbox
from realtime.routes import SESSIONS_KEY
from tests.test_realtime_errors import (  # noqa: F401  (fake_server is a fixture)
    FakeEngine,
    events_until_close,
    fake_server,
    noise,
    recv_json,
    start_vllm_stream,
)

FAKE = "fake-asr"
LONE = "\\ud800"  # in JSON text: a lone surrogate, valid JSON but not valid Unicode


def transcription_update(event_id: str = "evt_1", **transcription: str) -> str:
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 16000},
                "turn_detection": None,
                "transcription": {"model": FAKE, **transcription},
            }
        },
    }
    return json.dumps({"type": "session.update", "event_id": event_id, "session": session})


async def openai_turn_works(ws) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": noise(1.0)}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    while (event := await recv_json(ws, 20))[
        "type"
    ] != "conversation.item.input_audio_transcription.completed":
        assert event["type"] != "error", event
    assert event["transcript"] == "w1 w2"


async def vllm_turn_works(ws) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": noise(1.0)}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    while (event := await recv_json(ws, 20))["type"] != "transcription.done":
        assert event["type"] == "transcription.delta", event
    assert event["text"] == "w1 w2"


OPENAI_SURROGATES = {  # frame: (JSON text, error.param, event_id echoed)
    "prompt": (
        transcription_update("evt_bad", prompt="Coffee@").replace("@", LONE),
        "session.audio.input.transcription.prompt",
        "evt_bad",
    ),
    "event_id": (json.dumps({"type": "nope", "event_id": "e@"}).replace("@", LONE), "event_id", None),
    "type": (json.dumps({"type": "nope@", "event_id": "evt_bad"}).replace("@", LONE), "type", "evt_bad"),
    "key": (
        json.dumps({"type": "session.update", "event_id": "evt_bad", "session": {"x@": 1}}).replace(
            "@", LONE
        ),
        "session",
        "evt_bad",
    ),
    "language": (
        transcription_update("evt_bad", language="e@").replace("@", LONE),
        "session.audio.input.transcription.language",
        "evt_bad",
    ),
}


@pytest.mark.parametrize("case", list(OPENAI_SURROGATES))
async def test_openai_surrogate_is_an_error_naming_the_field(fake_server, case):  # noqa: F811
    frame, param, event_id = OPENAI_SURROGATES[case]
    url, _, _ = await fake_server()
    async with websockets.connect(url + "?intent=transcription") as ws:
        await recv_json(ws)
        await ws.send(transcription_update())
        assert (await recv_json(ws))["type"] == "session.updated"
        await ws.send(frame)
        event = await recv_json(ws, 10)
        assert event["type"] == "error" and event["event_id"], event
        error = event["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_text"), error
        assert error["param"] == param and error["event_id"] == event_id, error
        assert "surrogate" in error["message"], error
        await openai_turn_works(ws)


VLLM_SURROGATES = {
    "model": (json.dumps({"type": "session.update", "model": "m@"}).replace("@", LONE), "model"),
    "type": (json.dumps({"type": "nope@"}).replace("@", LONE), "type"),
    "audio": (json.dumps({"type": "input_audio_buffer.append", "audio": "@"}).replace("@", LONE), "audio"),
}


@pytest.mark.parametrize("case", list(VLLM_SURROGATES))
async def test_vllm_surrogate_is_an_error_naming_the_field(fake_server, case):  # noqa: F811
    frame, field = VLLM_SURROGATES[case]
    url, _, _ = await fake_server()
    async with websockets.connect(url) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": FAKE}))
        await ws.send(frame)
        event = await recv_json(ws, 10)
        assert event == {"type": "error", "error": event["error"], "code": "invalid_text"}, event
        assert event["error"].startswith(field), event
        await vllm_turn_works(ws)


async def test_first_event_with_a_surrogate_still_chooses_the_dialect(fake_server):  # noqa: F811
    url, _, _ = await fake_server()
    async with websockets.connect(url) as ws:
        await recv_json(ws)
        await ws.send(transcription_update("evt_bad", prompt="@").replace("@", LONE))
        error = (await recv_json(ws, 10))["error"]
        assert (error["code"], error["event_id"]) == ("invalid_text", "evt_bad"), error
        await ws.send(transcription_update())
        assert (await recv_json(ws))["type"] == "session.updated"
        await openai_turn_works(ws)


async def test_openai_session_update_on_a_vllm_session(fake_server):  # noqa: F811
    url, _, _ = await fake_server()
    async with websockets.connect(url) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": FAKE}))  # vLLM's dialect
        await ws.send(transcription_update())
        event = await recv_json(ws, 10)
        assert event == {"type": "error", "error": event["error"], "code": "invalid_event"}, event
        assert "session" in event["error"]
        await vllm_turn_works(ws)


async def test_vllm_session_update_on_an_openai_session(fake_server):  # noqa: F811
    url, _, _ = await fake_server()
    async with websockets.connect(url + "?intent=transcription") as ws:
        await recv_json(ws)
        await ws.send(transcription_update())
        assert (await recv_json(ws))["type"] == "session.updated"
        await ws.send(json.dumps({"type": "session.update", "event_id": "e2", "model": FAKE}))
        error = (await recv_json(ws, 10))["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "session", "e2"), error
        assert "model" in error["message"], error
        await openai_turn_works(ws)


# ---- the outbox: an event it cannot encode is reported, and the session goes on ----


class RecordingSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, message: bytes = b"") -> bool:
        self.closed = True
        return True


async def test_outbox_reports_an_event_it_cannot_encode():
    ws = RecordingSocket()
    outbox = Outbox(ws)  # type: ignore[arg-type]
    writer = asyncio.create_task(outbox.run())
    outbox.send(oa.TranscriptionDeltaEvent(item_id="item_1", delta="a\ud800"))
    outbox.send(oa.TranscriptionDeltaEvent(item_id="item_1", delta="fine"))
    outbox.close(1000, "")
    await asyncio.wait_for(writer, 5)
    first, second = (json.loads(data) for data in ws.sent)
    assert first == {"type": "error", "error": first["error"], "code": "event_not_sent"}, first
    assert second["delta"] == "fine" and ws.closed


# ---- a client that never reads loses its TCP connection, not only its session ----


def upgrade(host: str, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big") if n >= 126 else bytes([0x81, 0x80 | n])
    assert n < 1 << 16
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def flood_without_reading(ws_url: str, limit_s: float) -> float | None:
    """session.updates (each answered with a ~2 KB session.updated) on a socket that never reads: seconds
    until the server dropped the connection, or None."""
    url = urlsplit(ws_url)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((url.hostname, url.port))
        sock.sendall(upgrade(url.netloc, "/v1/realtime?intent=transcription"))
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        frame, pending = masked_frame(transcription_update(prompt="coffee " * 150)), b""
        sock.setblocking(False)
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            pending = pending or frame
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                time.sleep(0.02)
            except OSError:  # reset or broken pipe
                return time.monotonic() - started
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return time.monotonic() - started
        return None


async def test_client_that_never_reads_loses_its_connection(fake_server):  # noqa: F811
    url, app, _ = await fake_server()
    dropped = await asyncio.to_thread(flood_without_reading, url, 30.0)
    assert dropped is not None, "the server still holds the connection of a client that never reads"
    for _ in range(100):
        if not app[SESSIONS_KEY]:
            break
        await asyncio.sleep(0.05)
    assert not app[SESSIONS_KEY]
    async with websockets.connect(url) as ws:
        await start_vllm_stream(ws, 1.0)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        while (event := await recv_json(ws, 20))["type"] != "transcription.done":
            pass
        assert event["text"] == "w1 w2"


# ---- shutdown: the sessions' final decodes run before the engine stops taking requests ----


class DrainingEngine(FakeEngine):
    """Refuses new requests once drained, as engine.core.Engine.drain does during a graceful shutdown."""

    accepting = True
    refused = 0

    async def drain(self, timeout_s: float) -> bool:
        self.accepting = False
        return True

    async def transcribe(self, request: TranscriptionRequest):
        if not self.accepting:
            self.refused += 1
            raise EngineStoppedError("the server is shutting down")
        async for output in super().transcribe(request):
            yield output


async def test_shutdown_final_text_comes_before_the_engine_drains():
    engine = DrainingEngine(delay=0.3)
    app = web.Application()
    app[realtime_routes.ENGINE_KEY] = engine  # type: ignore[assignment]
    realtime_routes.setup_realtime(app, RealtimeLimits())

    async def drain(app: web.Application) -> None:  # the composition root's hook, registered after
        await engine.drain(30.0)

    app.on_shutdown.append(drain)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/v1/realtime") as ws:
            await start_vllm_stream(ws, 2.0)
            await asyncio.sleep(0.1)
            closing = asyncio.create_task(app.shutdown())
            events = await events_until_close(ws)
            await closing
    finally:
        await srv.close()
    assert [e["type"] for e in events][-2:] == ["transcription.done", "error"], events
    assert events[-2]["text"] == "w1 w2 w3 w4" and events[-1]["code"] == "server_shutting_down"
    assert ws.close_code == 1001
    assert not engine.accepting and engine.refused == 0
