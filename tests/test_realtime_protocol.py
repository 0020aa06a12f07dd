"""The rest of OpenAI's realtime protocol through the `openai` SDK: item retrieve/delete, partial session
updates, output settings, response overrides, transcription logprobs and token usage, the idle timeout.
Each bad input gets an error event naming its field, and the session stays usable."""

from __future__ import annotations

import asyncio
import base64
from functools import partial

import numpy as np
import pytest

from realtime.speech_out import audio_tokens
from tests import realtime_sdk
from tests.realtime_sdk import next_error, send_audio
from tests.speech import normalize_text, speech_with_pauses, wer

SENTENCE = "The quick brown fox jumps over the lazy dog."
next_event = partial(realtime_sdk.next_event, timeout=180.0)


@pytest.fixture
def llm_name(openai_client) -> str:
    return next(
        m.id for m in openai_client.models.list().data if "whisper" not in m.id and "minilm" not in m.id
    )


def text_item(text: str, role: str = "user") -> dict:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


async def test_item_retrieve_and_delete(async_openai_client, llm_name):
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.conversation.item.create(item=text_item("Remember the number seven."))
        added = await next_event(conn, "conversation.item.added")
        done = await next_event(conn, "conversation.item.done")
        assert done.item.id == added.item.id
        await conn.conversation.item.retrieve(item_id=added.item.id)
        retrieved = await next_event(conn, "conversation.item.retrieved")
        assert retrieved.item.id == added.item.id
        assert retrieved.item.content[0].text == "Remember the number seven."
        await conn.conversation.item.delete(item_id=added.item.id)
        deleted = await next_event(conn, "conversation.item.deleted")
        assert deleted.item_id == added.item.id
        for bad in (conn.conversation.item.retrieve, conn.conversation.item.delete):
            await bad(item_id=added.item.id)
            error = await next_error(conn)
            assert (error.code, error.param) == ("item_not_found", "item_id")
        # Still usable: the deleted item is no longer the last one.
        await conn.conversation.item.create(item=text_item("Hello."))
        again = await next_event(conn, "conversation.item.added")
        assert again.previous_item_id is None


async def test_partial_session_update_keeps_turn_detection(async_openai_client, llm_name):
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": {"threshold": 0.7}}}}
        )
        first = (await next_event(conn, "session.updated")).session.audio.input.turn_detection
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": {"silence_duration_ms": 300}}}}
        )
        second = (await next_event(conn, "session.updated")).session.audio.input.turn_detection
    assert first.type == second.type == "server_vad"
    assert second.threshold == pytest.approx(0.7) and second.silence_duration_ms == 300
    assert second.prefix_padding_ms == first.prefix_padding_ms


BAD_SESSION_UPDATES = {
    "unknown_voice": (
        {"audio": {"output": {"voice": "no-such-voice"}}},
        "invalid_value",
        "session.audio.output.voice",
    ),
    "both_modalities": (
        {"output_modalities": ["text", "audio"]},
        "invalid_value",
        "session.output_modalities",
    ),
    "unsupported_output_field": (
        {"audio": {"output": {"noise": "yes"}}},
        "unsupported_field",
        "session.audio.output.noise",
    ),
    "unsupported_include": ({"include": ["item.whatever"]}, "unsupported_field", "session.include"),
    "speed_out_of_range": (
        {"audio": {"output": {"speed": 3.0}}},
        "invalid_value",
        "session.audio.output.speed",
    ),
}


async def test_output_settings_bad_values_and_a_response_override(async_openai_client, llm_name):
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        output = {"format": {"type": "audio/pcmu"}, "voice": "joe", "speed": 1.2}
        await conn.session.update(session={"type": "realtime", "audio": {"output": output}})
        updated = (await next_event(conn, "session.updated")).session
        assert updated.output_modalities == ["text"]  # the settings apply to audio replies
        assert (updated.audio.output.format.type, updated.audio.output.voice) == ("audio/pcmu", "joe")
        assert updated.audio.output.speed == pytest.approx(1.2)
        for case, (session, code, param) in BAD_SESSION_UPDATES.items():
            await conn.session.update(session={"type": "realtime", **session})
            error = await next_error(conn)
            assert (error.code, error.param) == (code, param), (case, error)
        # One spoken response in a text session (the session's pcmu format), then the session is text again.
        await conn.conversation.item.create(item=text_item("Say hello."))
        await conn.response.create(response={"output_modalities": ["audio"], "max_output_tokens": 8})
        found, events = await realtime_sdk.collect_until(conn, "response.done")
        done = found["response.done"]
        assert done.response.output_modalities == ["audio"]
        ulaw = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        assert len(ulaw) > 1000  # 8 kHz G.711: one byte a sample
        assert done.response.usage.output_token_details.audio_tokens == audio_tokens(len(ulaw), 8000)
        assert not any(e.type == "response.output_text.delta" for e in events)
        await conn.response.create(response={"max_output_tokens": 4})
        found, events = await realtime_sdk.collect_until(conn, "response.done")
        assert any(e.type == "response.output_text.delta" for e in events)
        assert not any(e.type == "response.output_audio.delta" for e in events)


async def test_transcription_logprobs_and_token_usage(async_openai_client):
    audio = speech_with_pauses([SENTENCE], pause_s=0.5, sample_rate=24000)
    async with async_openai_client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(
            session={
                "type": "transcription",
                "include": ["item.input_audio_transcription.logprobs"],
                "audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None}},
            }
        )
        updated = await next_event(conn, "session.updated")
        assert updated.session.include == ["item.input_audio_transcription.logprobs"]
        await send_audio(conn, audio)
        await conn.input_audio_buffer.commit()
        found, events = await realtime_sdk.collect_until(
            conn, "conversation.item.input_audio_transcription.completed"
        )
    completed = found["conversation.item.input_audio_transcription.completed"]
    assert wer(SENTENCE, completed.transcript) < 0.2, completed.transcript
    deltas = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas and all(d.logprobs for d in deltas)
    assert normalize_text("".join(lp.token for lp in completed.logprobs)) == normalize_text(
        completed.transcript
    )
    assert all(lp.logprob <= 0.0 and bytes(lp.bytes).decode() == lp.token for lp in completed.logprobs)
    usage = completed.usage
    assert usage.type == "tokens"
    assert usage.input_token_details.audio_tokens == pytest.approx(len(audio) / 24000 * 50, abs=2)
    assert usage.output_tokens >= len(completed.logprobs)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_idle_timeout_commits_the_silence_and_answers(async_openai_client, llm_name):
    silence = np.zeros(6 * 24000, dtype=np.float32)
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "max_output_tokens": 4,
                "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}},
            }
        )
        updated = await next_event(conn, "session.updated")
        assert updated.session.audio.input.turn_detection.idle_timeout_ms == 5000
        sender = asyncio.create_task(send_audio(conn, silence, pace_s=0.0))
        found, _ = await realtime_sdk.collect_until(
            conn, "input_audio_buffer.timeout_triggered", "input_audio_buffer.committed", "response.done"
        )
        await sender
    triggered = found["input_audio_buffer.timeout_triggered"]
    assert triggered.audio_end_ms - triggered.audio_start_ms >= 5000
    assert found["input_audio_buffer.committed"].item_id == triggered.item_id
    assert found["response.done"].response.status in ("completed", "incomplete")
