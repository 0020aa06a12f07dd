"""/v1/realtime in OpenAI's GA dialect, driven by the real `openai` SDK (`client.realtime.connect()`)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import websockets

from audio.g711 import encode_pcma, encode_pcmu
from clients.realtime_client import chunks
from tests.realtime_sdk import next_event, send_audio
from tests.speech import speech_with_pauses, synthesize, wer

MODEL = "whisper-tiny.en"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "I would like a cup of coffee please.",
    "Tomorrow it will rain in the morning.",
]


def transcription_session(rate: int = 24000, vad: bool = True, fmt: str = "audio/pcm") -> dict:
    audio_format: dict = {"type": fmt, "rate": rate} if fmt == "audio/pcm" else {"type": fmt}
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": audio_format,
                "transcription": {"model": MODEL, "language": "en"},
                "turn_detection": (
                    {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                    }
                    if vad
                    else None
                ),
            }
        },
    }


@pytest.fixture
def connect(async_openai_client):
    def open_session(**query):
        return async_openai_client.realtime.connect(extra_query={"intent": "transcription", **query})

    return open_session


async def test_server_vad_three_utterances(connect):
    audio = speech_with_pauses(TEXTS, pause_s=1.2, sample_rate=24000)
    async with connect() as conn:
        created = await next_event(conn, "session.created")
        assert created.session.type == "transcription"
        await conn.session.update(session=transcription_session())
        updated = await next_event(conn, "session.updated")
        assert updated.session.audio.input.turn_detection.type == "server_vad"
        sender = asyncio.create_task(send_audio(conn, audio, 24000))
        started, stopped, committed, completed = [], [], [], []
        deltas: dict[str, list[str]] = {}
        while len(completed) < 3:
            event = await next_event(
                conn,
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed",
            )
            if event.type == "input_audio_buffer.speech_started":
                started.append(event)
            elif event.type == "input_audio_buffer.speech_stopped":
                stopped.append(event)
            elif event.type == "input_audio_buffer.committed":
                committed.append(event)
            elif event.type.endswith(".delta"):
                deltas.setdefault(event.item_id, []).append(event.delta)
            else:
                completed.append(event)
        await sender
    assert [e.item_id for e in committed] == [e.item_id for e in started] == [e.item_id for e in completed]
    assert committed[0].previous_item_id is None
    assert [e.previous_item_id for e in committed[1:]] == [e.item_id for e in committed[:-1]]
    for start, stop in zip(started, stopped, strict=True):
        assert start.audio_start_ms < stop.audio_end_ms
    for text, event in zip(TEXTS, completed, strict=True):
        assert wer(text, event.transcript) < 0.2, event.transcript
        assert "".join(deltas.get(event.item_id, [])) == event.transcript
        assert event.usage.type == "duration" and event.usage.seconds > 1.0


async def test_manual_commit_and_clear(connect):
    async with connect() as conn:
        await conn.session.update(session=transcription_session(rate=16000, vad=False))
        updated = await next_event(conn, "session.updated")
        assert updated.session.audio.input.turn_detection is None
        assert updated.session.audio.input.format.rate == 16000
        # Audio that is cleared never reaches a transcript.
        await send_audio(conn, synthesize("Purple elephants dance at midnight."), 16000, pace_s=0)
        await conn.input_audio_buffer.clear()
        await next_event(conn, "input_audio_buffer.cleared")
        await send_audio(conn, synthesize(TEXTS[1]), 16000, pace_s=0)
        await conn.input_audio_buffer.commit()
        committed = await next_event(conn, "input_audio_buffer.committed")
        done = await next_event(conn, "conversation.item.input_audio_transcription.completed")
    assert done.item_id == committed.item_id
    assert wer(TEXTS[1], done.transcript) < 0.2, done.transcript
    assert "elephant" not in done.transcript.lower()


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_g711_input(connect, fmt):
    encode = encode_pcmu if fmt == "audio/pcmu" else encode_pcma
    audio = synthesize(TEXTS[0], sample_rate=8000)
    async with connect() as conn:
        await conn.session.update(session=transcription_session(vad=False, fmt=fmt))
        await next_event(conn, "session.updated")
        for chunk in chunks(audio, 8000, 100):
            await conn.input_audio_buffer.append(audio=base64.b64encode(encode(chunk)).decode())
        await conn.input_audio_buffer.commit()
        done = await next_event(conn, "conversation.item.input_audio_transcription.completed")
    assert wer(TEXTS[0], done.transcript) < 0.2, done.transcript


async def test_model_in_the_url_selects_a_transcription_session(server):
    """`?model=<speech model>` (no intent): an OpenAI transcription session with that model."""
    async with websockets.connect(f"{server.ws_url}/v1/realtime?model={MODEL}") as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created" and created["event_id"]
        assert created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["transcription"]["model"] == MODEL
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_1"}))
        error = json.loads(await ws.recv())
    assert error["type"] == "error"
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "evt_1"


# ---- the audio pieces, in process ----


def test_g711_decoders_match_the_standard_tables():
    from audio.g711 import decode_pcma, decode_pcmu

    # ITU-T G.711 reference points (16-bit linear values).
    assert (decode_pcmu(bytes([0xFF, 0x7F, 0x00, 0x80])) * 32768).tolist() == [0, 0, -32124, 32124]
    assert (decode_pcma(bytes([0xD5, 0x55, 0xAA, 0x2A])) * 32768).tolist() == [8, -8, 32256, -32256]
    x = (np.sin(np.linspace(0, 300, 8000)) * 0.7).astype(np.float32)
    for encode, decode in ((encode_pcmu, decode_pcmu), (encode_pcma, decode_pcma)):
        assert np.abs(decode(encode(x)) - x).max() < 0.02


def test_vad_finds_each_utterance():
    from audio.vad import SpeechStarted, SpeechStopped, VadParams, VoiceActivityDetector

    audio = speech_with_pauses(TEXTS, pause_s=1.2)
    vad = VoiceActivityDetector(VadParams(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500))
    events = []
    for chunk in chunks(audio, 16000, 70):  # chunk sizes that do not line up with 512-sample frames
        events += vad.feed(chunk)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped] * 3
    starts = [e.sample / 16000 for e in events[::2]]
    stops = [e.sample / 16000 for e in events[1::2]]
    boundary = 1.2
    for text, start, stop in zip(TEXTS, starts, stops, strict=True):
        speech = len(synthesize(text)) / 16000
        assert boundary - 0.5 < start < boundary + 0.2
        assert boundary + speech < stop < boundary + speech + 1.2
        boundary += speech + 1.2
