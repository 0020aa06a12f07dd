"""Live captions: deltas only ever append and add up to the final, at several loads; words emitted early
(Whisper sure of them) are what the final decode says; the ASR scheduler's preview order and shedding."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest_asyncio
import websockets

from clients.realtime_client import chunks, openai_transcription_session, pcm16_base64
from engine.asr.scheduler import ASRScheduler
from engine.asr.task import TranscriptionTask, make_task
from engine.config import EngineConfig
from engine.core import Engine
from engine.request import Priority, TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats
from realtime.session import StreamingSettings
from realtime.transcriber import EngineDecoder, TurnTranscriber
from tests.speech import speech_with_pauses, synthesize, wer

MODEL = "whisper-tiny.en"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I would like a cup of coffee please.",
    "Tomorrow it will rain in the morning.",
    "My sister plays the piano every evening.",
    "The train to London leaves at nine o'clock.",
    "Please close the window before you leave.",
    "We planted tomatoes and beans in the garden.",
]


# ---- over the wire: OpenAI transcription sessions with server VAD, several at once ----


async def caption_session(ws_url: str, texts: list[str], speed: float) -> list[tuple[list[str], str]]:
    """Stream the texts (1 s pauses) at `speed` x real time; per turn: its deltas and its final transcript."""
    audio = speech_with_pauses(texts, pause_s=1.0, sample_rate=24000)
    turns: dict[str, tuple[list[str], list[str]]] = {}  # item id -> (deltas, [final])
    async with websockets.connect(f"{ws_url}/v1/realtime?intent=transcription", max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": openai_transcription_session()}))

        async def send() -> None:
            for chunk in chunks(audio, 24000, 100):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
                await asyncio.sleep(0.1 / speed)

        sender = asyncio.create_task(send())
        try:
            while not sender.done() or any(not final for _, final in turns.values()):
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except asyncio.TimeoutError:
                    continue
                kind = event["type"]
                assert kind != "error", event
                if kind == "input_audio_buffer.speech_started":
                    turns[event["item_id"]] = ([], [])
                elif kind == "conversation.item.input_audio_transcription.delta":
                    turns[event["item_id"]][0].append(event["delta"])
                elif kind == "conversation.item.input_audio_transcription.completed":
                    turns[event["item_id"]][1].append(event["transcript"])
            await sender
        finally:
            sender.cancel()
    return [(deltas, final[0]) for deltas, final in turns.values()]


async def test_deltas_only_append_and_join_to_the_final_at_several_loads(server):
    checked = streamed = 0
    for sessions in (1, 3, 6):
        scripts = [[SENTENCES[(i + k) % len(SENTENCES)] for k in range(2)] for i in range(sessions)]
        results = await asyncio.gather(*(caption_session(server.ws_url, s, speed=1.0) for s in scripts))
        for texts, turns in zip(scripts, results, strict=True):
            assert len(turns) == len(texts), (texts, turns)
            for (deltas, final), text in zip(turns, texts, strict=True):
                joined = ""
                for delta in deltas:
                    joined += delta
                    assert final.startswith(joined), (deltas, final)  # never a word taken back
                assert joined == final
                assert wer(text, final) <= 0.2, (text, final)
                checked += 1
                streamed += len(deltas) > 1  # text came before the final decode's
    assert checked == 2 * (1 + 3 + 6)
    assert streamed >= 2


# ---- in-process: a turn's early words against its own final decode ----


@pytest_asyncio.fixture(scope="module")
async def engine():
    engine = Engine.load(EngineConfig(llm=None, embed=[], asr=[MODEL]))
    await engine.start()
    yield engine
    await engine.stop()


async def stream_turn(
    engine: Engine, audio: np.ndarray, settings: StreamingSettings
) -> tuple[TurnTranscriber, list[str]]:
    """Feed a clip 100 ms at a time, running each preview the turn asks for, then its final decode."""
    turn = TurnTranscriber(EngineDecoder(engine, MODEL, None, settings, live_stream="turn"), settings)
    deltas = []
    for chunk in chunks(audio, 16000, 100):
        turn.append(chunk)
        if turn.due_for_partial():
            deltas.append((await turn.partial()).delta)
    deltas.append((await turn.final()).delta)
    return turn, deltas


async def test_words_emitted_early_are_never_contradicted_by_the_final(engine):
    early = 0
    for text in SENTENCES:
        turn, deltas = await stream_turn(engine, synthesize(text), StreamingSettings())
        assert turn.confident_contradicted == 0, (text, turn.words)
        assert "".join(deltas) == turn.transcript
        assert wer(text, turn.transcript) <= 0.15, (text, turn.transcript)
        early += turn.confident_words
    assert early >= len(SENTENCES)  # the early path is taken, not just safe because it never runs


async def test_the_result_carries_each_tokens_logprob(engine):
    result = None
    async for out in engine.transcribe(TranscriptionRequest(synthesize(SENTENCES[0]), MODEL)):
        result = out.result or result
    assert result is not None and result.logprobs
    assert "".join(lp.token for lp in result.logprobs).strip() == result.text
    assert all(lp.logprob <= 0.0 and bytes(lp.bytes).decode() == lp.token for lp in result.logprobs)
    assert sum(lp.logprob for lp in result.logprobs) / len(result.logprobs) > -0.5  # clear speech: sure


# ---- the ASR scheduler's preview order (pure Python) ----


def preview(scheduler: ASRScheduler, stream: str) -> TranscriptionTask:
    request = TranscriptionRequest(np.zeros(16000, dtype=np.float32), MODEL, priority=Priority.PREVIEW)
    request.live_stream = stream
    task = make_task(request, asyncio.Queue())
    scheduler.add(task)
    return task


def run_one(scheduler: ASRScheduler) -> TranscriptionTask:
    """Start the next window and decode it to the end; the task it belonged to."""
    from engine.asr.job import WhisperRowOutput
    from engine.asr.plan import ASRResult

    plan = scheduler.schedule()
    assert plan is not None
    (start,) = [s for step in plan.models for s in step.starts]
    group = next(g for g in scheduler.running if g.batch_id == start.batch_id)
    scheduler.postprocess(ASRResult(outputs={start.batch_id: [WhisperRowOutput("x", finished=True)]}))
    return group.windows[0].task


def served(scheduler: ASRScheduler, streams: str) -> None:
    """Each turn in `streams` has had a preview decoded, in that order."""
    for stream in streams:
        preview(scheduler, stream)
        run_one(scheduler)


def test_a_turns_first_preview_runs_ahead_of_other_turns_later_ones():
    for order in ("fair", "fifo"):
        scheduler = ASRScheduler(16, EngineStats(), max_encode=1, preview_order=order)  # type: ignore[arg-type]
        served(scheduler, "ab")
        later = [preview(scheduler, "a"), preview(scheduler, "b")]
        first = preview(scheduler, "c")  # asked last: a new turn's first preview
        expected = [first, *later] if order == "fair" else [*later, first]  # fifo: the old order
        assert [run_one(scheduler) for _ in range(3)] == expected


def test_previews_are_shed_fairly_across_sessions():
    """Room for one preview at a time: the turn served longest ago gets it, whoever asked first."""
    scheduler = ASRScheduler(16, EngineStats(), max_encode=1, preview_max_windows=1)
    served(scheduler, "abca")  # b was served longest ago, then c, then a
    asks = {stream: preview(scheduler, stream) for stream in "acb"}
    assert run_one(scheduler) is asks["b"]
    for stream in "ac":  # shed: they end with `skipped`, and their sessions ask again later
        assert asks[stream].outputs.get_nowait() == TranscriptionOutput(text="", skipped=True)
    asks = {stream: preview(scheduler, stream) for stream in "abd"}
    assert run_one(scheduler) is asks["d"]  # a new turn first, even at the back of the queue

    fifo = ASRScheduler(16, EngineStats(), max_encode=1, preview_max_windows=1, preview_order="fifo")
    served(fifo, "abca")
    asks = {stream: preview(fifo, stream) for stream in "acb"}
    assert run_one(fifo) is asks["a"]  # first come, first served: a again, b and c go without
