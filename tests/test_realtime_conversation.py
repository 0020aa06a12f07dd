"""Conversation mode (session.type "realtime") through the `openai` SDK: spoken turns answered by the LLM."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from tests import realtime_sdk
from tests.realtime_sdk import send_audio
from tests.speech import speech_with_pauses, wer

QUESTION = "What is the capital of France?"
# Replies stream from the LLM after a transcription: give each event longer than a transcript alone.
next_event = partial(realtime_sdk.next_event, timeout=180.0)


async def collect_response(conn) -> tuple[list, object]:
    """Every response.* event up to and including response.done."""
    events = []
    while True:
        event = await next_event(
            conn,
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        )
        events.append(event)
        if event.type == "response.done":
            return events, event


@pytest.fixture
def llm_name(openai_client) -> str:
    return next(m.id for m in openai_client.models.list().data if "whisper" not in m.id)


async def test_spoken_question_gets_a_streamed_answer(async_openai_client, llm_name):
    audio = speech_with_pauses([QUESTION], pause_s=1.0, sample_rate=24000)
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        created = await next_event(conn, "session.created")
        assert created.session.type == "realtime"
        await send_audio(conn, audio)
        user = await next_event(conn, "conversation.item.input_audio_transcription.completed")
        assert wer(QUESTION, user.transcript) < 0.2, user.transcript
        events, done = await collect_response(conn)
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.output_item.added", "response.content_part.added"]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    text_done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas == text_done.text
    assert "paris" in deltas.lower(), deltas
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].text == deltas
    assert done.response.usage.output_tokens > 0 and done.response.usage.input_tokens > 0


async def test_text_item_and_manual_response(async_openai_client, llm_name):
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer in one short sentence.",
                "max_output_tokens": 48,
            }
        )
        await next_event(conn, "session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
        )
        added = await next_event(conn, "conversation.item.added")
        assert added.item.role == "user" and added.item.content[0].text == QUESTION
        await conn.response.create(response={"max_output_tokens": 6})
        _, done = await collect_response(conn)
    assert done.response.status == "incomplete"
    assert done.response.status_details.reason == "max_output_tokens"
    assert done.response.usage.output_tokens == 6


async def test_response_cancel(async_openai_client, llm_name):
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Write a very long story about a dragon and a knight."}
                ],
            }
        )
        await conn.response.create(response={"max_output_tokens": 400})
        await next_event(conn, "response.output_text.delta")
        await conn.response.cancel()
        done = await next_event(conn, "response.done")
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        # The session stays usable.
        await conn.response.create(response={"max_output_tokens": 4})
        again = await next_event(conn, "response.done")
    assert again.response.status == "incomplete"


async def test_barge_in_cancels_the_running_response(async_openai_client, llm_name):
    audio = speech_with_pauses([QUESTION], pause_s=1.0, sample_rate=24000)
    async with async_openai_client.realtime.connect(model=llm_name) as conn:
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tell me a very long story about the sea."}],
            }
        )
        await conn.response.create(response={"max_output_tokens": 400})
        first = await next_event(conn, "response.output_text.delta")
        sender = asyncio.create_task(send_audio(conn, audio))  # the user starts talking over the reply
        await next_event(conn, "input_audio_buffer.speech_started")
        cancelled = await next_event(conn, "response.done")
        assert cancelled.response.id == first.response_id
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "turn_detected"
        assert cancelled.response.output[0].status == "incomplete"
        # The interrupting turn is transcribed and answered.
        user = await next_event(conn, "conversation.item.input_audio_transcription.completed")
        answer = await next_event(conn, "response.done")
        await sender
    assert wer(QUESTION, user.transcript) < 0.2
    assert answer.response.status in ("completed", "incomplete")
    assert answer.response.id != cancelled.response.id
