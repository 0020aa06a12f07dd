"""The Whisper side of the engine in-process: long audio, windows batched across requests."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
import pytest_asyncio

from engine.asr.job import WhisperRowOutput
from engine.asr.plan import ASRPlan, ASRResult
from engine.asr.scheduler import ASRScheduler
from engine.asr.task import TranscriptionTask, make_task
from engine.asr.text import compression_ratio
from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import InvalidParameter
from engine.request import Priority, TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats
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
    engine = Engine.load(EngineConfig(llm=None, asr=["whisper-tiny.en"]))
    await engine.start()
    yield engine
    await engine.stop()


async def transcribe(engine: Engine, audio: np.ndarray, **kw) -> tuple[str, object]:
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
    with pytest.raises(InvalidParameter, match="English-only") as refused:
        await transcribe(engine, synthesize(SENTENCES[0]), task="translate")
    assert refused.value.param == "task"
    assert engine.pending() == 0
    _, result = await transcribe(engine, synthesize(SENTENCES[1]))
    assert wer(SENTENCES[1], result.text) < 0.2


# ----------------------------------------------------------------------------- the scheduler, no model

MODEL = "whisper-tiny.en"
ONE_SECOND = np.zeros(16000, dtype=np.float32)


def add(scheduler: ASRScheduler, priority: Priority = Priority.BATCH, audio: np.ndarray = ONE_SECOND):
    task = make_task(TranscriptionRequest(audio, MODEL, priority=priority), asyncio.Queue())
    scheduler.add(task)
    return task


def started(scheduler: ASRScheduler, plan: ASRPlan | None) -> list[TranscriptionTask]:
    """The tasks of the windows the plan starts."""
    ids = {start.batch_id for step in (plan.models if plan else ()) for start in step.starts}
    return [w.task for g in scheduler.running if g.batch_id in ids for w in g.windows]


def stepped(scheduler: ASRScheduler, plan: ASRPlan) -> list[TranscriptionTask]:
    """The tasks of the windows in groups started earlier that the plan advances."""
    ids = {i for step in plan.models for i in step.running}
    return [w.task for g in scheduler.running if g.batch_id in ids for w in g.windows]


def finish(scheduler: ASRScheduler, plan: ASRPlan) -> None:
    """The runner's report that every window the plan started decoded to the end."""
    ids = [start.batch_id for step in plan.models for start in step.starts]
    sizes = {g.batch_id: len(g.windows) for g in scheduler.running}
    scheduler.postprocess(
        ASRResult(outputs={i: [WhisperRowOutput(text="done", finished=True)] * sizes[i] for i in ids})
    )


def outcome(task: TranscriptionTask) -> list[TranscriptionOutput | BaseException]:
    return [task.outputs.get_nowait() for _ in range(task.outputs.qsize())]


def test_aborted_window_anywhere_in_the_queue_is_dropped():
    """Removing a waiting window must not compare audio arrays (that raised and stalled the loop)."""
    scheduler = ASRScheduler(max_batch=1, stats=EngineStats())
    tasks = [add(scheduler, audio=synthesize(s)) for s in SENTENCES[:3]]
    scheduler.abort(tasks[2])
    assert scheduler.pending() == 2
    plan = scheduler.schedule()
    assert started(scheduler, plan) == [tasks[0]]
    assert [w.task for q in scheduler.waiting.values() for w in q] == [tasks[1]]


@pytest.mark.parametrize("realtime_runs_alone", [True, False])
def test_a_final_decode_runs_alone_on_cpu(realtime_runs_alone):
    """With realtime_runs_alone (the CPU default), a REALTIME window starts in a group of its own and
    nothing new starts until it is done; groups in flight go on decoding beside it."""
    scheduler = ASRScheduler(16, EngineStats(), max_encode=1, realtime_runs_alone=realtime_runs_alone)
    preview = add(scheduler, Priority.PREVIEW)
    assert started(scheduler, scheduler.schedule()) == [preview]
    final = add(scheduler, Priority.REALTIME)
    later = [
        add(scheduler, Priority.PREVIEW),
        add(scheduler, Priority.BATCH),
        add(scheduler, Priority.REALTIME),
    ]
    plan = scheduler.schedule()
    assert started(scheduler, plan) == [final]  # ahead of the preview in flight
    assert stepped(scheduler, plan) == [preview]  # still decoding
    final_plan = plan
    # Finals first: the waiting preview was shed, not kept for later (the session asks again).
    assert outcome(later[0]) == [TranscriptionOutput(text="", skipped=True)]

    plan = scheduler.schedule()
    assert started(scheduler, plan) == ([] if realtime_runs_alone else [later[2]])
    if realtime_runs_alone:
        finish(scheduler, final_plan)
        plan = scheduler.schedule()
        assert started(scheduler, plan) == [later[2]]  # REALTIME first, then the rest
        finish(scheduler, plan)
        plan = scheduler.schedule()
        assert started(scheduler, plan) == [later[1]]


def test_previews_wait_for_no_final():
    """Finals first: a preview is shed while a final is waiting or decoding, and runs once it is done."""
    scheduler = ASRScheduler(16, EngineStats(), max_encode=4)
    final = add(scheduler, Priority.REALTIME)
    plan = scheduler.schedule()
    assert started(scheduler, plan) == [final]
    preview = add(scheduler, Priority.PREVIEW)
    assert scheduler.pending() == 2
    assert started(scheduler, scheduler.schedule()) == []  # the final is still decoding
    assert outcome(preview) == [TranscriptionOutput(text="", skipped=True)]
    assert scheduler.pending() == 1 and scheduler.stats.asr_waiting == 0
    finish(scheduler, plan)
    assert scheduler.stats.asr_requests_finished == 1  # the final; a shed preview is not counted
    again = add(scheduler, Priority.PREVIEW)
    assert started(scheduler, scheduler.schedule()) == [again]
    assert outcome(again) == []


def test_previews_are_shed_at_the_window_bound():
    """A preview is shed when `preview_max_windows` other windows are queued or decoding; previews queued
    ahead of it count, its own windows do not."""
    scheduler = ASRScheduler(16, EngineStats(), max_encode=1, preview_max_windows=3)
    batch = [add(scheduler), add(scheduler)]
    assert started(scheduler, scheduler.schedule()) == [batch[0]]  # one decoding, one queued
    previews = [add(scheduler, Priority.PREVIEW) for _ in range(3)]
    plan = scheduler.schedule()
    assert started(scheduler, plan) == [previews[0]]  # 2 others: it runs, ahead of the queued HTTP work
    assert [bool(outcome(p)) for p in previews] == [False, True, True]
    assert scheduler.stats.asr_waiting == 1 and scheduler.stats.asr_running == 2

    alone = ASRScheduler(16, EngineStats(), max_encode=1, preview_max_windows=1)
    long = add(alone, Priority.PREVIEW, audio=np.zeros(16000 * 40, dtype=np.float32))  # two windows
    assert len(long.windows) == 2
    assert started(alone, alone.schedule()) == [long]
    assert started(alone, alone.schedule()) == [long]  # its first window decoding is not "another"
    assert outcome(long) == []


def test_scheduler_imports_no_torch():
    """The ASR scheduler and its plan types are pure Python: the event loop never touches torch."""
    import subprocess
    import sys

    code = (
        "import sys, engine.asr.scheduler, engine.asr.plan, engine.asr.task, engine.asr.validation; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_requests_are_validated_once_with_the_parameter_named(engine):
    audio = synthesize(SENTENCES[0])
    for fields, param in [
        ({"model": "whisper-large"}, "model"),
        ({"language": "fr"}, "language"),
        ({"language": "klingon"}, "language"),
        ({"temperature": -0.5}, "temperature"),
        ({"min_context_s": 0.0}, "min_context_s"),
        ({"draft_tokens": [50256]}, "draft_tokens"),
    ]:
        request = {"audio": audio, "model": "whisper-tiny.en", **fields}
        with pytest.raises(InvalidParameter) as refused:
            async for _ in engine.transcribe(TranscriptionRequest(**request)):
                pass
        assert refused.value.param == param, fields
    assert engine.pending() == 0


async def test_a_client_leaving_mid_decode_frees_its_batch(engine):
    lane = next(lane for lane in engine.lanes if lane.name == "asr")
    request = TranscriptionRequest(speech_with_pauses(SENTENCES[:3], 0.5), "whisper-tiny.en")
    async with contextlib.aclosing(engine.transcribe(request)) as stream:
        async for out in stream:
            if out.text:
                break  # the client goes away mid-decode
    assert engine.pending() == 0
    for _ in range(100):  # the idle engine hands the batch's memory back within a few seconds
        if not lane.runner.batches:
            break
        await asyncio.sleep(0.1)
    assert not lane.runner.batches
    _, result = await transcribe(engine, synthesize(SENTENCES[4]))
    assert wer(SENTENCES[4], result.text) < 0.2


# ----------------------------------------------------------------------------- silence

TWENTY_SECONDS = 20 * 16000
QUIET_NOISE = (0.003 * np.random.default_rng(1234).standard_normal(TWENTY_SECONDS)).astype(np.float32)


@pytest.mark.parametrize("kind", ["zeros", "noise"])
@pytest.mark.parametrize(
    "options",
    [{}, {"with_timestamps": True}, {"priority": Priority.REALTIME, "encoder_context": "trimmed"}],
    ids=["http", "timestamps", "live-final"],
)
async def test_silence_transcribes_to_nothing(engine, kind, options):
    """Whisper reads silence as " you" and noise as " .": the no-speech rule leaves no text, not even in
    the stream."""
    audio = np.zeros(TWENTY_SECONDS, np.float32) if kind == "zeros" else QUIET_NOISE
    streamed, result = await transcribe(engine, audio, **options)
    assert streamed == result.text == "" and result.segments == [], result.text
    assert result.language == "en" and result.duration == 20.0


async def test_silence_then_speech_keeps_the_speech(engine):
    speech = speech_with_pauses(SENTENCES[:3], 0.5)
    _, alone = await transcribe(engine, speech, with_timestamps=True)
    silence = np.zeros(26 * 16000, np.float32)
    streamed, result = await transcribe(
        engine, np.concatenate([silence, QUIET_NOISE[:16000], speech]), with_timestamps=True
    )
    expected = " ".join(SENTENCES[:3])
    assert streamed == result.text
    assert wer(expected, result.text) <= max(wer(expected, alone.text), 0.05), (alone.text, result.text)
    # Nothing made up in the silent first window: the first segment is the first sentence.
    assert result.segments[0].start > 20 and wer(SENTENCES[0], result.segments[0].text) < 0.2
    for segment in result.segments:  # Whisper's figures for verbose_json, from the decode that ran
        assert -1.0 < segment.avg_logprob < 0 and 0 <= segment.no_speech_prob < 0.6
        assert segment.compression_ratio == compression_ratio(segment.text) > 0
