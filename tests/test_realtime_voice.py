"""Spoken replies in /v1/realtime conversations through the `openai` SDK: audio out, barge-in and truncation.

The reply audio is checked by ear, with our own Whisper (the server's /v1/audio/transcriptions)."""

from __future__ import annotations

import asyncio
import base64
import io
from functools import partial

import numpy as np
import pytest
import soundfile as sf

from engine.tts.segmenter import ClauseSegmenter
from realtime.speech_out import audio_tokens
from tests import realtime_sdk
from tests.realtime_sdk import send_audio
from tests.speech import speech_with_pauses, wer

QUESTION = "What is the capital of France?"
INTERRUPTION = "Stop. Tell me about Berlin instead."
OUTPUT_RATE = 24000
TOUR_GUIDE = "You are a tour guide. Answer in five long sentences."
next_event = partial(realtime_sdk.next_event, timeout=180.0)
AUDIO_RESPONSE_EVENTS = (
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
)


async def collect_audio_response(conn) -> tuple[list, object]:
    """Every response.* event of an audio reply, up to and including response.done."""
    events = []
    while True:
        event = await next_event(conn, *AUDIO_RESPONSE_EVENTS)
        events.append(event)
        if event.type == "response.done":
            return events, event


def joined_pcm(events: list) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")


def heard(openai_client, pcm: bytes) -> str:
    """What our Whisper hears in 24 kHz PCM16 reply audio."""
    samples = np.frombuffer(pcm, dtype="<i2")
    wav = io.BytesIO()
    sf.write(wav, samples, OUTPUT_RATE, format="WAV", subtype="PCM_16")
    wav.name = "reply.wav"
    wav.seek(0)
    return openai_client.audio.transcriptions.create(model="whisper-base", file=wav).text


@pytest.fixture
def llm_name(openai_client) -> str:
    return next(
        m.id for m in openai_client.models.list().data if "whisper" not in m.id and "minilm" not in m.id
    )


async def test_spoken_question_gets_a_spoken_answer(async_openai_client, openai_client, llm_name):
    audio = speech_with_pauses([QUESTION], pause_s=1.0, sample_rate=24000)
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        updated = await next_event(conn, "session.updated")
        assert updated.session.output_modalities == ["audio"]
        assert updated.session.audio.output.format.type == "audio/pcm"
        await send_audio(conn, audio)
        user = await next_event(conn, "conversation.item.input_audio_transcription.completed")
        assert wer(QUESTION, user.transcript) < 0.2, user.transcript
        events, done = await collect_audio_response(conn)
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.output_item.added", "response.content_part.added"]
    assert types[-5:] == list(AUDIO_RESPONSE_EVENTS[-5:])
    assert {"response.output_audio_transcript.delta", "response.output_audio.delta"} <= set(types)
    assert events[2].part.type == "output_audio"
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert (
        next(e for e in events if e.type == "response.output_audio_transcript.done").transcript == transcript
    )
    assert done.response.status == "completed" and done.response.output_modalities == ["audio"]
    assert done.response.output[0].content[0].transcript == transcript
    # Speech starts while the LLM still writes: the first clause's audio comes before the last text.
    segmenter = ClauseSegmenter()  # as the server cut the reply
    if len(segmenter.feed(transcript) + segmenter.flush()) > 1:
        first_audio = types.index("response.output_audio.delta")
        last_text = len(types) - 1 - types[::-1].index("response.output_audio_transcript.delta")
        assert first_audio < last_text, types
    pcm = joined_pcm(events)
    assert len(pcm) % 2 == 0 and len(pcm) > OUTPUT_RATE  # PCM16, over a second of speech
    assert done.response.usage.output_token_details.audio_tokens == audio_tokens(len(pcm) // 2, OUTPUT_RATE)
    assert "paris" in transcript.lower(), transcript
    # The audio says the transcript; Whisper may mishear one word ("Pairs"), hence WER, not a keyword.
    spoken = heard(openai_client, pcm)
    assert wer(transcript, spoken) < 0.3, (transcript, spoken)


async def prompt_tokens(client, llm_name: str, context: list[tuple[str, str]], instructions: str) -> int:
    """The prompt tokens of a response to `context` (role, text), measured by a text session."""
    async with client.realtime.connect(model=llm_name) as conn:
        await conn.session.update(session={"type": "realtime", "instructions": instructions})
        await next_event(conn, "session.updated")
        for role, text in context:
            kind = "output_text" if role == "assistant" else "input_text"
            await conn.conversation.item.create(
                item={"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
            )
        await conn.response.create(response={"max_output_tokens": 1})
        done = await next_event(conn, "response.done")
    return done.response.usage.input_tokens


async def test_barge_in_truncates_the_reply_to_what_was_heard(async_openai_client, llm_name):
    interruption = speech_with_pauses([INTERRUPTION], pause_s=1.0, sample_rate=24000)
    async with async_openai_client.realtime.connect(model=llm_name) as raw:
        conn = realtime_sdk.Recording(raw)
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["audio"], "instructions": TOUR_GUIDE}
        )
        await next_event(conn, "session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
        )
        await conn.response.create(response={"max_output_tokens": 200})
        found, before = await realtime_sdk.collect_until(conn, "response.output_audio.delta")
        first = found["response.output_audio.delta"]
        received_ms = len(base64.b64decode(first.delta)) // 2 * 1000 // OUTPUT_RATE
        sender = asyncio.create_task(send_audio(conn, interruption))  # the user talks over the reply
        found, during = await realtime_sdk.collect_until(conn, "input_audio_buffer.speech_started")
        before += during
        played_ms = min(received_ms, 700)  # what the client had played when it stopped playback
        await conn.conversation.item.truncate(item_id=first.item_id, content_index=0, audio_end_ms=played_ms)
        found, seen = await realtime_sdk.collect_until(conn, "response.done", "conversation.item.truncated")
        cancelled, truncated = found["response.done"], found["conversation.item.truncated"]
        assert (truncated.item_id, truncated.audio_end_ms) == (first.item_id, played_ms)
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "turn_detected"
        sent = "".join(e.delta for e in before + seen if e.type == "response.output_audio_transcript.delta")
        await conn.conversation.item.retrieve(item_id=first.item_id)
        kept = (await next_event(conn, "conversation.item.retrieved")).item.content[0].transcript
        assert kept and sent.startswith(kept) and len(kept) < len(sent), (kept, sent)

        # Bad truncations get error events; the session carries on.
        await conn.conversation.item.truncate(item_id="item_nope", content_index=0, audio_end_ms=0)
        error = await realtime_sdk.next_error(conn)
        assert (error.code, error.param) == ("item_not_found", "item_id")
        await conn.conversation.item.truncate(item_id=first.item_id, content_index=0, audio_end_ms=60_000)
        error = await realtime_sdk.next_error(conn)
        assert (error.code, error.param) == ("invalid_value", "audio_end_ms")

        # The interrupting turn is answered from a context that holds only the heard text.
        user = await next_event(conn, "conversation.item.input_audio_transcription.completed")
        answer = await next_event(conn, "response.done")
        await sender
    # Synthesis stopped with the response: no audio of it after its response.done.
    done_at = conn.events.index(cancelled)
    late = [e for e in conn.events[done_at:] if getattr(e, "response_id", None) == cancelled.response.id]
    assert not late, [e.type for e in late]
    assert wer(INTERRUPTION, user.transcript) < 0.3, user.transcript
    assert answer.response.status in ("completed", "incomplete")
    context = [("user", QUESTION), ("assistant", kept), ("user", user.transcript)]
    expected = await prompt_tokens(async_openai_client, llm_name, context, instructions=TOUR_GUIDE)
    assert answer.response.usage.input_tokens == expected


def test_played_audio_maps_to_whole_words_of_the_clauses_heard():
    from realtime.speech_out import SpokenAudio, SpokenClause

    transcript = "Paris is the capital of France. It is on the Seine."
    first_end = transcript.index(".") + 1
    spoken = SpokenAudio(rate=1000)  # 1 sample a millisecond
    spoken.clauses = [
        SpokenClause(0, first_end, samples=2000),
        SpokenClause(first_end + 1, len(transcript), samples=1000),
        SpokenClause(len(transcript), len(transcript), samples=0),  # not sent yet
    ]
    assert spoken.ms == 3000
    assert spoken.heard_text(transcript, 3000) == transcript
    assert spoken.heard_text(transcript, 2000) == "Paris is the capital of France."
    assert spoken.heard_text(transcript, 1000) == "Paris is the"  # half its audio: half its text, whole words
    assert spoken.heard_text(transcript, 2500) == "Paris is the capital of France. It is on"
    assert spoken.heard_text(transcript, 0) == ""
    spoken.truncate(2500)
    assert spoken.ms == 2500 and len(spoken.clauses) == 2
