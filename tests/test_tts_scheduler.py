"""engine/tts/scheduler.py: live conversations first, bounded steps, aborts (pure Python, no model)."""

from __future__ import annotations

import asyncio

from engine.tts.request import SpeechOutput, SpeechPriority
from engine.tts.scheduler import SpeechBatch, SpeechResult, SpeechTask, SpokenPiece, TTSScheduler

HTTP, REALTIME = SpeechPriority.HTTP, SpeechPriority.REALTIME


def _task(text: str, priority: SpeechPriority) -> SpeechTask:
    return SpeechTask(text, "joe", 1.0, priority, asyncio.Queue())


def _speak(scheduler: TTSScheduler, batch: SpeechBatch, seconds: float = 0.1) -> None:
    pieces = tuple(SpokenPiece(b"\x00\x01" * 100, 22050) for _ in batch.jobs)
    scheduler.postprocess(batch, SpeechResult(pieces, seconds))


def test_realtime_pieces_jump_ahead_of_queued_http_work() -> None:
    scheduler = TTSScheduler(max_chars=1, busy_chars=1, others_stepping=lambda: False)
    http = [_task(f"HTTP sentence {i}.", HTTP) for i in range(5)]
    for task in http:
        scheduler.add(task)
    first = scheduler.schedule()
    assert first is not None and [j.text for j in first.jobs] == ["HTTP sentence 0."]
    live = [_task("Paris.", REALTIME), _task("It is the capital.", REALTIME)]
    for task in live:
        scheduler.add(task)
    order = []
    while (batch := scheduler.schedule()) is not None:
        order += [job.text for job in batch.jobs]
        _speak(scheduler, batch)
    assert order[:2] == ["Paris.", "It is the capital."]
    assert order[2:] == [f"HTTP sentence {i}." for i in range(1, 5)]
    out = live[0].outputs.get_nowait()
    assert isinstance(out, SpeechOutput) and out.finished and out.pcm == b"\x00\x01" * 100


def test_a_step_takes_pieces_up_to_its_character_budget() -> None:
    scheduler = TTSScheduler(max_chars=40, busy_chars=1, others_stepping=lambda: False)
    for text in ["a" * 15, "b" * 15, "c" * 15, "d" * 100]:
        scheduler.add(_task(text, HTTP))
    sizes = []
    while (batch := scheduler.schedule()) is not None:
        sizes.append([len(job.text) for job in batch.jobs])
        _speak(scheduler, batch)
    assert sizes == [[15, 15], [15], [100]]  # an over-budget piece still runs, alone


def test_aborted_pieces_are_never_spoken_and_running_ones_are_dropped() -> None:
    scheduler = TTSScheduler(max_chars=1, busy_chars=1, others_stepping=lambda: False)
    running, waiting, kept = _task("one.", HTTP), _task("two.", HTTP), _task("three.", HTTP)
    for task in (running, waiting, kept):
        scheduler.add(task)
    batch = scheduler.schedule()
    assert batch is not None and batch.jobs[0].text == "one."
    scheduler.abort(running)
    scheduler.abort(waiting)
    _speak(scheduler, batch)
    assert running.outputs.empty()
    batch = scheduler.schedule()
    assert batch is not None and [j.text for j in batch.jobs] == ["three."]
    assert scheduler.pending() == 1 and scheduler.waiting() == 0


def test_http_work_yields_the_thread_while_another_lane_steps_but_realtime_does_not() -> None:
    busy = [True]
    scheduler = TTSScheduler(max_chars=400, busy_chars=1, others_stepping=lambda: busy[0])
    for i in range(3):
        scheduler.add(_task(f"http {i}.", HTTP))
    batch = scheduler.schedule()
    assert batch is not None and len(batch.jobs) == 1  # busy: one piece per step
    _speak(scheduler, batch, seconds=5.0)  # a long piece: HTTP now waits about as long again
    assert scheduler.schedule() is None
    scheduler.add(_task("live.", REALTIME))
    batch = scheduler.schedule()
    assert batch is not None and [j.text for j in batch.jobs] == ["live."]
    _speak(scheduler, batch)
    busy[0] = False  # alone again: HTTP goes on, with the whole budget
    batch = scheduler.schedule()
    assert batch is not None and [j.text for j in batch.jobs] == ["http 1.", "http 2."]


def test_fail_ends_the_batch_and_fail_all_ends_everything() -> None:
    scheduler = TTSScheduler(max_chars=1, busy_chars=1, others_stepping=lambda: False)
    a, b = _task("a.", REALTIME), _task("b.", HTTP)
    scheduler.add(a)
    scheduler.add(b)
    batch = scheduler.schedule()
    assert batch is not None
    scheduler.fail(batch, RuntimeError("boom"))
    assert isinstance(a.outputs.get_nowait(), RuntimeError)
    scheduler.fail_all(RuntimeError("stop"))
    assert isinstance(b.outputs.get_nowait(), RuntimeError) and scheduler.pending() == 0
    assert scheduler.schedule() is None


def test_requests_take_turns_and_each_keeps_its_order() -> None:
    scheduler = TTSScheduler(max_chars=1, busy_chars=1, others_stepping=lambda: False)
    long_text = [SpeechTask(f"long {i}.", "joe", 1.0, HTTP, asyncio.Queue(), "a") for i in range(4)]
    short = [SpeechTask(f"short {i}.", "joe", 1.0, HTTP, asyncio.Queue(), "b") for i in range(2)]
    for task in long_text + short:
        scheduler.add(task)
    order = []
    while (batch := scheduler.schedule()) is not None:
        order += [job.text for job in batch.jobs]
        _speak(scheduler, batch)
    # The request that came second gets its first audio after one piece of the first, not after all four.
    assert order == ["long 0.", "short 0.", "long 1.", "short 1.", "long 2.", "long 3."]
