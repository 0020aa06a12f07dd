"""Bad input gets an error event and the session stays usable; limits close with final text, an error,
and the right close code. The limit, auth and shutdown tests run the in-process app (server/app.py's
create_app) with a fake engine."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
import websockets
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.realtime_client import chunks, pcm16_base64
from engine.config import EngineConfig
from engine.request import TranscriptionOutput, TranscriptionRequest, TranscriptionResult, TranscriptSegment
from realtime.limits import RealtimeLimits
from realtime.routes import SESSIONS_KEY
from server.app import create_app
from server.settings import ServerSettings
from tests.speech import synthesize, wer

MODEL = "whisper-tiny.en"
SENTENCE = "I would like a cup of coffee please."


async def recv_json(ws, timeout: float = 60.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def append(audio: str) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


# ---- against the real server: each bad input, then a request that works ----

VLLM_BAD_INPUTS = {
    "invalid_json": ("{not json", "invalid_json"),
    "unknown_event": (json.dumps({"type": "input_audio_buffer.explode"}), "unknown_event"),
    "invalid_base64": (append("@@not-base64@@"), "invalid_audio"),
    "odd_byte_count": (append(base64.b64encode(b"\x01\x02\x03").decode()), "invalid_audio"),
    "binary_frame": (b"\x00\x01\x02\x03", "binary_not_supported"),
    "missing_field": (json.dumps({"type": "input_audio_buffer.append"}), "invalid_value"),
    "unknown_model": (json.dumps({"type": "session.update", "model": "no-such-model"}), "model_not_found"),
    "final_commit_without_audio": (json.dumps({"type": "input_audio_buffer.commit", "final": True}), None),
}


async def vllm_utterance_works(ws) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    for chunk in chunks(synthesize(SENTENCE), 16000, 250):
        await ws.send(append(pcm16_base64(chunk)))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    while (event := await recv_json(ws))["type"] != "transcription.done":
        assert event["type"] == "transcription.delta", event
    assert wer(SENTENCE, event["text"]) < 0.2, event["text"]


@pytest.mark.parametrize("case", list(VLLM_BAD_INPUTS))
async def test_vllm_bad_input_then_a_working_request(server, case):
    frame, code = VLLM_BAD_INPUTS[case]
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == (code or "input_audio_buffer_commit_empty")
        assert isinstance(error["error"], str) and error["error"]
        await vllm_utterance_works(ws)


async def test_vllm_session_update_is_optional(server):
    """As in vLLM's documented client: a session that never sends session.update uses the default model."""
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        await recv_json(ws)
        await vllm_utterance_works(ws)


def openai_session(**audio_input) -> str:
    session = {
        "type": "transcription",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None, **audio_input}
        },
    }
    return json.dumps({"type": "session.update", "event_id": "evt_bad", "session": session})


OPENAI_BAD_INPUTS = {
    "invalid_json": ('{"type": "input_audio_buffer.append", ', "invalid_json", None),
    "unknown_event": (json.dumps({"type": "input_audio_buffer.flush"}), "invalid_event_type", "type"),
    "unsupported_event": (
        json.dumps({"type": "output_audio_buffer.clear"}),
        "unsupported_event",
        "type",
    ),
    "invalid_base64": (append("%%%"), "invalid_audio", "audio"),
    "odd_byte_count": (append(base64.b64encode(b"\x01\x02\x03").decode()), "invalid_audio", "audio"),
    "binary_frame": (b"\x00\x01", "binary_not_supported", None),
    "sample_rate": (
        openai_session(format={"type": "audio/pcm", "rate": 44100}),
        "invalid_value",
        "session.audio.input.format.rate",
    ),
    "unknown_format": (
        openai_session(format={"type": "audio/opus"}),
        "invalid_value",
        "session.audio.input.format.type",
    ),
    "unsupported_field": (
        openai_session(noise_reduction={"type": "near_field"}),
        "unsupported_field",
        "session.audio.input.noise_reduction",
    ),
    "semantic_vad": (
        openai_session(turn_detection={"type": "semantic_vad"}),
        "unsupported_field",
        "session.audio.input.turn_detection.type",
    ),
    "threshold_out_of_range": (
        openai_session(turn_detection={"type": "server_vad", "threshold": 3}),
        "invalid_value",
        "session.audio.input.turn_detection.threshold",
    ),
    "unknown_transcription_model": (
        openai_session(transcription={"model": "gpt-99-transcribe"}),
        "model_not_found",
        "session.audio.input.transcription.model",
    ),
    "commit_too_little_audio": (
        [
            append(pcm16_base64(np.zeros(800, dtype=np.float32))),
            json.dumps({"type": "input_audio_buffer.commit"}),
        ],
        "input_audio_buffer_commit_empty",
        None,
    ),
    "response_in_transcription_session": (
        json.dumps({"type": "response.create"}),
        "invalid_event_type",
        "type",
    ),
}


@pytest.mark.parametrize("case", list(OPENAI_BAD_INPUTS))
async def test_openai_bad_input_then_a_working_request(server, case):
    frames, code, param = OPENAI_BAD_INPUTS[case]
    async with websockets.connect(f"{server.ws_url}/v1/realtime?intent=transcription") as ws:
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.send(openai_session(transcription={"model": MODEL}))
        assert (await recv_json(ws))["type"] == "session.updated"
        for frame in frames if isinstance(frames, list) else [frames]:
            await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["event_id"]
        assert error["error"]["code"] == code, error
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"]
        if param:
            assert error["error"]["param"] == param, error
        if isinstance(frames, str) and '"evt_bad"' in frames:
            assert error["error"]["event_id"] == "evt_bad"
        # The session still works: a manually committed turn at 16 kHz (the configuration is unchanged).
        for chunk in chunks(synthesize(SENTENCE), 16000, 250):
            await ws.send(append(pcm16_base64(chunk)))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := await recv_json(ws))[
            "type"
        ] != "conversation.item.input_audio_transcription.completed":
            assert event["type"] != "error", event
        assert wer(SENTENCE, event["transcript"]) < 0.2, event["transcript"]


# ---- in process: limits, auth, shutdown, disconnects ----


@dataclass
class FakeASRInfo:
    name: str
    multilingual: bool = False


class FakeEngine:
    """Transcribes N seconds of audio as `w1 w2 ... w(2N)` after `delay` seconds."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.device = "cpu"
        self.llm_name = None
        self.tokenizer = None
        self.max_model_len = 2048
        self.asr_models = {"fake-asr": FakeASRInfo("fake-asr")}
        self.tts_voices: dict = {}  # no speech synthesis
        self.started = 0
        self.finished = 0
        self.aborted = 0

    async def start(self) -> None:
        pass

    async def drain(self, timeout_s: float) -> bool:
        return True

    async def stop(self) -> None:
        pass

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        self.started += 1
        completed = False
        try:
            await asyncio.sleep(self.delay)
            seconds = len(request.audio) / 16000
            text = " ".join(f"w{i}" for i in range(1, int(seconds * 2) + 1))
            seg = TranscriptSegment(0, 0.0, seconds, text)
            completed = True
            self.finished += 1
            yield TranscriptionOutput(
                text, TranscriptionResult(text, "en", seconds, [seg], len(text.split()))
            )
        finally:
            if not completed:
                self.aborted += 1


@pytest.fixture
async def fake_server():
    servers: list[TestServer] = []

    async def start(
        engine: FakeEngine | None = None, api_key: str | None = None, **limits
    ) -> tuple[str, web.Application, FakeEngine]:
        engine = engine or FakeEngine()
        settings = ServerSettings(api_key=api_key, realtime=RealtimeLimits(**limits))
        app = create_app(EngineConfig(llm=None, asr=[]), settings=settings, engine=engine)  # type: ignore[arg-type]
        srv = TestServer(app, host="127.0.0.1")
        await srv.start_server()
        servers.append(srv)
        return f"ws://127.0.0.1:{srv.port}/v1/realtime", app, engine

    yield start
    for srv in servers:
        await srv.close()


def noise(seconds: float) -> str:
    rng = np.random.default_rng(0)
    return pcm16_base64((rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32))


async def start_vllm_stream(ws, seconds: float) -> None:
    await recv_json(ws)
    await ws.send(json.dumps({"type": "session.update", "model": "fake-asr"}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await ws.send(append(noise(seconds)))


async def events_until_close(ws) -> list[dict]:
    events = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            events.append(await recv_json(ws, timeout=20))
    return events


async def test_api_key_header_or_subprotocol(fake_server):
    url, _, _ = await fake_server(api_key="sekrit")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url):
            pass
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url, additional_headers={"Authorization": "Bearer wrong"}):
            pass
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sekrit"}) as ws:
        assert (await recv_json(ws))["type"] == "session.created"
    protocols = ["realtime", "openai-insecure-api-key.sekrit"]
    async with websockets.connect(url + "?intent=transcription", subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        assert (await recv_json(ws))["type"] == "session.created"


async def test_too_many_sessions_is_try_again_later(fake_server):
    url, _, _ = await fake_server(max_sessions=1)
    async with websockets.connect(url) as first:
        await recv_json(first)
        async with websockets.connect(url + "?intent=transcription") as second:
            events = await events_until_close(second)
            assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "too_many_sessions"
            assert second.close_code == 1013
        # The first session is unaffected.
        await first.send("{")
        assert (await recv_json(first))["code"] == "invalid_json"


async def test_idle_timeout_closes_with_policy_violation(fake_server):
    url, app, _ = await fake_server(session_idle_timeout=0.5)
    async with websockets.connect(url) as ws:
        events = await events_until_close(ws)
    assert events[-1]["code"] == "session_idle_timeout"
    assert ws.close_code == 1008
    await asyncio.sleep(0.1)
    assert not app[SESSIONS_KEY]


async def test_session_duration_limit_sends_final_text_first(fake_server):
    url, _, _ = await fake_server(max_session_seconds=1.0)
    async with websockets.connect(url) as ws:
        await start_vllm_stream(ws, 1.5)
        events = await events_until_close(ws)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["transcription.done", "error"], kinds
    assert events[-2]["text"] == " ".join(f"w{i}" for i in range(1, 4))
    assert events[-1]["code"] == "session_expired"
    assert ws.close_code == 1008


async def test_buffered_audio_limit_is_message_too_big(fake_server):
    url, _, _ = await fake_server(max_buffered_audio_seconds=2.0)
    async with websockets.connect(url) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": "fake-asr"}))
        for _ in range(5):  # not streaming yet: the audio piles up
            await ws.send(append(noise(0.5)))
        events = await events_until_close(ws)
    assert [e["type"] for e in events][-2:] == ["transcription.done", "error"]
    assert events[-1]["code"] == "input_audio_buffer_too_large"
    assert ws.close_code == 1009


async def test_shutdown_sends_final_text_and_closes_going_away(fake_server):
    url, app, _ = await fake_server()
    async with websockets.connect(url) as ws:
        await start_vllm_stream(ws, 2.0)
        await asyncio.sleep(0.2)
        closing = asyncio.create_task(app.shutdown())  # what the runner does first on SIGTERM
        events = await events_until_close(ws)
        await closing
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["transcription.done", "error"], kinds
    assert events[-1]["code"] == "server_shutting_down"
    assert ws.close_code == 1001


async def test_abrupt_disconnect_aborts_engine_requests(fake_server):
    url, app, engine = await fake_server(engine=FakeEngine(delay=30.0))
    ws = await websockets.connect(url)
    await start_vllm_stream(ws, 3.0)
    for _ in range(100):
        if engine.started:
            break
        await asyncio.sleep(0.02)
    assert engine.started == 1
    ws.transport.abort()  # no close frame
    for _ in range(200):
        if engine.aborted and not app[SESSIONS_KEY]:
            break
        await asyncio.sleep(0.02)
    assert engine.aborted == 1 and engine.finished == 0
    assert not app[SESSIONS_KEY]
    # Nothing else was disturbed: a new session works.
    engine.delay = 0.01
    async with websockets.connect(url) as ws2:
        await start_vllm_stream(ws2, 1.0)
        await ws2.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
        while (event := await recv_json(ws2))["type"] != "transcription.done":
            pass
        assert event["text"] == "w1 w2"


async def test_oversized_frame_closes_message_too_big(fake_server):
    url, app, _ = await fake_server()
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        with pytest.raises(websockets.ConnectionClosed):
            # Uncompressed, the server may close while the frame is still being sent.
            await ws.send(append("A" * (17 * 1024 * 1024)))
            while True:
                await recv_json(ws, timeout=20)
    assert ws.close_code == 1009
    await asyncio.sleep(0.1)
    assert not app[SESSIONS_KEY]


async def test_unknown_fields_are_named(fake_server):
    url, _, _ = await fake_server()
    async with websockets.connect(url + "?intent=transcription") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "e1", "flush": True}))
        error = (await recv_json(ws))["error"]
        assert (error["code"], error["param"], error["event_id"]) == ("unsupported_field", "flush", "e1")
        session = {"type": "transcription", "audio": {"output": {"voice": "alloy"}}, "include": ["x"]}
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        error = (await recv_json(ws))["error"]
        assert error["code"] == "unsupported_field"
        assert "session.audio.output.voice" in error["message"] and "session.include" in error["message"]
