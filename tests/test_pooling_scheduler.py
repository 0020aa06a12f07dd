"""The pooling scheduler alone (pure Python): length-bucketed batches, the token budget, fairness, aborts."""

from __future__ import annotations

import asyncio

import numpy as np

from engine.pooling.prepare import Encoded, Prepared
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.pooling.scheduler import PoolingResult, PoolingScheduler
from engine.pooling.task import PoolingTask

MODEL = PoolingModelInfo("m", "embed", dimensions=4, max_model_len=512, normalize=True, matryoshka=None)


def task(*lengths: int) -> PoolingTask:
    prepared = Prepared([Encoded([1] * n, None) for n in lengths])
    request = PoolingRequest("embed", inputs=["x"] * len(lengths))
    return PoolingTask(request, MODEL, prepared, asyncio.Queue())


def scheduler(max_tokens: int = 4096, busy_tokens: int = 256, busy: bool = False) -> PoolingScheduler:
    return PoolingScheduler(max_tokens, busy_tokens, max_rows=256, others_stepping=lambda: busy)


def lengths_of(s: PoolingScheduler) -> list[list[int]]:
    batches = []
    while (batch := s.schedule()) is not None:
        batches.append([row.length for row in batch.rows])
    return batches


def test_a_long_text_does_not_pad_short_ones():
    s = scheduler()
    s.add(task(512))
    for _ in range(63):
        s.add(task(12))
    assert lengths_of(s) == [[512], [12] * 63]


def test_similar_lengths_share_a_batch_up_to_the_budget():
    s = scheduler(max_tokens=1000)
    s.add(task(*[10, 100, 11, 95, 12, 90, 13, 99] * 4))
    batches = lengths_of(s)
    for batch in batches:
        assert len(batch) * max(batch) <= 1000
        assert max(batch) <= 2 * min(batch) + 16
    assert sorted(n for b in batches for n in b) == sorted([10, 100, 11, 95, 12, 90, 13, 99] * 4)
    assert len(batches) == 3  # the 16 short rows in one batch; the 16 long ones in two (10 x 100 <= 1000)


def test_below_other_lanes_a_small_budget_and_a_share_of_the_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("engine.pooling.scheduler.time.monotonic", lambda: now[0])
    idle, busy = scheduler(busy=False), scheduler(busy=True)
    for s in (idle, busy):
        s.add(task(*[64] * 64))
    first = busy.schedule()
    assert first is not None and len(first.rows) == 256 // 64
    vectors = [np.ones(4, dtype=np.float32)] * len(first.rows)
    busy.postprocess(first, PoolingResult(vectors, seconds=0.05))
    # The next forward waits 3 x 50 ms (a 25% share); the others' steps go on alone meanwhile.
    assert busy.schedule() is None
    now[0] += 0.149
    assert busy.schedule() is None
    now[0] += 0.002
    assert busy.schedule() is not None
    # Alone, pooling takes the whole budget at every step.
    batch = idle.schedule()
    assert batch is not None and len(batch.rows) == 64
    idle.postprocess(batch, PoolingResult([np.ones(4, dtype=np.float32)] * 64, seconds=0.05))
    assert idle.schedule() is None  # nothing left: every row ran


def test_the_oldest_row_always_goes_first_and_alone_if_need_be():
    s = scheduler(max_tokens=100)
    s.add(task(300))  # over the budget on its own: it still runs
    s.add(task(5, 5))
    assert lengths_of(s) == [[300], [5, 5]]


def test_results_finish_the_request_and_aborts_drop_its_rows():
    s = scheduler()
    done, left = task(3, 4), task(5)
    s.add(done)
    s.add(left)
    assert s.pending() == 2
    s.abort(left)
    batch = s.schedule()
    assert batch is not None and [r.length for r in batch.rows] == [3, 4]
    assert s.schedule() is None and s.pending() == 1
    vectors = [np.array([3.0, 4.0, 0, 0], dtype=np.float32), np.ones(4, dtype=np.float32)]
    s.postprocess(batch, PoolingResult(vectors, seconds=0.01))
    out = done.outputs.get_nowait()
    assert isinstance(out, PoolingOutput) and out.prompt_tokens == 7
    assert np.allclose(out.data[0], [0.6, 0.8, 0, 0]) and np.allclose(out.data[1], [0.5] * 4)
    assert s.pending() == 0


def test_a_failed_forward_fails_its_requests_only():
    s = scheduler(max_tokens=16)
    first, other = task(8, 100), task(8)
    s.add(first)
    s.add(other)
    batch = s.schedule()
    assert batch is not None and [r.task for r in batch.rows] == [first, other]
    s.fail(batch, RuntimeError("boom"))
    assert isinstance(first.outputs.get_nowait(), RuntimeError)
    assert isinstance(other.outputs.get_nowait(), RuntimeError)
    assert s.schedule() is None and s.pending() == 0  # first's 100-token row went with it
