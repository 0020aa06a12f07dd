"""The Whisper side of the engine in-process: long audio, windows batched across requests."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import pytest_asyncio

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.request import TranscriptionRequest
from tests.speech import speech_with_pauses, synthesize, wer

SENTENCES = [
    "The weather was cold and windy all through the morning.",
    "We walked along the river to the old stone bridge.",
    "My sister bought fresh bread at the corner bakery.",
    "The train to the city leaves every twenty minutes.",
    "Please remember to close the windows before you leave.",
    "The children played football in the park after school.",
    "He spent the whole evening reading a long novel.",
    "We watched the stars from the top of the hill.",
    "The museum opens at nine o'clock on weekdays.",
    "Our neighbours are planning a trip to the mountains.",
]


@pytest_asyncio.fixture(scope="module")
async def engine():
    engine = AsyncEngine.load(EngineConfig(llm=None, asr=["whisper-tiny.en"]))
    await engine.start()
    yield engine
    await engine.stop()


async def transcribe(engine: AsyncEngine, audio: np.ndarray, **kw) -> tuple[str, object]:
    streamed = ""
    result = None
    async for out in engine.transcribe(TranscriptionRequest(audio, "whisper-tiny.en", **kw)):
        streamed += out.text
        result = out.result or result
    return streamed, result


@pytest.mark.parametrize("with_timestamps", [False, True])
async def test_long_audio_split_into_windows_loses_nothing(engine, with_timestamps):
    audio = speech_with_pauses(SENTENCES, 1.0)  # about 37 s: two windows
    streamed, result = await transcribe(engine, audio, with_timestamps=with_timestamps)
    assert len(audio) / 16000 > 30
    assert streamed == result.text  # the streamed increments add up to the final text
    assert wer(" ".join(SENTENCES), result.text) < 0.08, result.text
    assert "  " not in result.text and ".The" not in result.text  # windows join with one space
    if with_timestamps:
        assert len(result.segments) >= 8
        starts = [s.start for s in result.segments]
        assert starts == sorted(starts) and result.segments[-1].end <= result.duration + 0.5


async def test_concurrent_requests_share_whisper_batches(engine):
    before = engine.stats().asr_multi_request_batches
    clips = [synthesize(s) for s in SENTENCES[:6]]
    results = await asyncio.gather(*[transcribe(engine, clip) for clip in clips])
    for sentence, (_, result) in zip(SENTENCES, results, strict=False):
        assert wer(sentence, result.text) < 0.2, result.text
    assert engine.stats().asr_multi_request_batches > before


async def test_bad_job_refused_alone(engine):
    with pytest.raises(ValueError, match="English-only"):
        await transcribe(engine, synthesize(SENTENCES[0]), task="translate")
    _, result = await transcribe(engine, synthesize(SENTENCES[1]))
    assert wer(SENTENCES[1], result.text) < 0.2


def test_aborted_window_anywhere_in_the_queue_is_dropped():
    """Removing a waiting window must not compare audio arrays (that raised and stalled the loop)."""
    from engine.asr_scheduler import ASRScheduler, make_task
    from engine.stats import EngineStats

    scheduler = ASRScheduler(max_batch=1, stats=EngineStats())
    tasks = [
        make_task(TranscriptionRequest(synthesize(s), "whisper-tiny.en"), asyncio.Queue())
        for s in SENTENCES[:3]
    ]
    for task in tasks:
        scheduler.add(task)
    tasks[2].aborted = True
    work = scheduler.schedule()
    assert [w.task for w in work.new_groups[0].windows] == [tasks[0]]
    assert [w.task for q in scheduler.waiting.values() for w in q] == [tasks[1]]


@pytest.mark.parametrize("realtime_runs_alone", [True, False])
def test_a_final_decode_runs_alone_on_cpu(realtime_runs_alone):
    """With realtime_runs_alone (the CPU default), a REALTIME window starts in a group of its own and
    nothing new starts until it is done; groups in flight go on decoding beside it."""
    from engine.asr_scheduler import ASRScheduler, make_task
    from engine.request import Priority
    from engine.stats import EngineStats
    from engine.whisper_runner import WhisperRowOutput

    scheduler = ASRScheduler(16, EngineStats(), max_encode=1, realtime_runs_alone=realtime_runs_alone)
    audio = np.zeros(16000, dtype=np.float32)

    def add(priority: Priority):
        task = make_task(TranscriptionRequest(audio, "whisper-tiny.en", priority=priority), asyncio.Queue())
        scheduler.add(task)
        return task

    preview = add(Priority.PREVIEW)
    assert [w.task for w in scheduler.schedule().new_groups[0].windows] == [preview]
    final = add(Priority.REALTIME)
    later = [add(Priority.PREVIEW), add(Priority.BATCH), add(Priority.REALTIME)]
    work = scheduler.schedule()
    assert [w.task for w in work.new_groups[0].windows] == [final]  # ahead of the preview in flight
    assert [w.task for g in work.running_groups for w in g.windows] == [preview]  # still decoding
    final_group = work.new_groups[0]

    work = scheduler.schedule()
    started = [w.task for g in work.new_groups for w in g.windows]
    assert started == ([] if realtime_runs_alone else [later[2]])
    if realtime_runs_alone:
        scheduler.postprocess(final_group, [WhisperRowOutput(text="done", finished=True)])
        work = scheduler.schedule()
        assert [w.task for w in work.new_groups[0].windows] == [later[2]]  # REALTIME first, then the rest
        scheduler.postprocess(work.new_groups[0], [WhisperRowOutput(text="done", finished=True)])
        work = scheduler.schedule()
        assert [w.task for w in work.new_groups[0].windows] == [later[0]]
