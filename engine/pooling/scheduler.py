"""The pooling scheduler: which inputs share the next forward pass. Pure Python.

Every request's inputs (rows) wait together, from every route and client. Each step runs one forward:
- the oldest waiting row always goes in (nothing starves);
- the batch grows around it with rows of similar length (kept sorted by length), taking whichever
  neighbour wastes the least padding, and never one that would pad more than about twice: one 512-token
  text does not pad 63 short ones;
- it stops at a token budget (rows x longest row).
While another lane is stepping (a live session's Whisper decode, a token stream), pooling runs below it:
the budget is small, and pooling forwards take at most LIVE_SHARE of the inference thread's time (a step
without one comes between them). A flood of embedding requests then slows a caption or a token stream by
a bounded fraction instead of stalling it; when nothing else runs, pooling has the whole thread.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.pooling.task import PoolingRow, PoolingTask

RowKey = tuple[int, int]  # (length, row_id): the sort order of a model's waiting rows
# A row joins a batch only if the longest row is at most this many times its length (plus a little slack
# for very short texts, whose padding costs next to nothing).
MAX_PAD_RATIO = 2.0
PAD_SLACK_TOKENS = 16
LIVE_SHARE = 0.25  # while another lane steps: the most of the inference thread's time pooling takes


@dataclass(frozen=True)
class PoolingResult:
    vectors: list[np.ndarray]  # one row per batch row: pooled vector or class logits
    seconds: float  # the forward's wall time


@dataclass(frozen=True)
class PoolingBatch:
    """One forward pass: rows of one model. The runner reads token_ids/type_ids only."""

    model: str
    rows: tuple[PoolingRow, ...]

    @property
    def token_ids(self) -> list[list[int]]:
        return [row.token_ids for row in self.rows]

    @property
    def type_ids(self) -> list[list[int] | None]:
        return [row.type_ids for row in self.rows]


class PoolingScheduler:
    def __init__(
        self, max_tokens: int, busy_tokens: int, max_rows: int, others_stepping: Callable[[], bool]
    ) -> None:
        self.max_tokens = max_tokens  # padded tokens per forward when nothing else runs
        self.busy_tokens = busy_tokens  # ... while another lane steps
        self.max_rows = max_rows
        # True when another lane has planned this step (so the engine steps on even if pooling waits).
        self.others_stepping = others_stepping
        self._resume_at = 0.0  # while others step, the next forward waits until then (LIVE_SHARE)
        self.tasks: dict[int, PoolingTask] = {}  # unfinished, keyed by id()
        self._fifo: deque[PoolingRow] = deque()  # arrival order; rows already taken are skipped
        self._sorted: dict[str, list[RowKey]] = {}  # per model
        self._waiting: dict[int, PoolingRow] = {}  # row_id -> row

    # ---- requests ----

    def add(self, task: PoolingTask) -> None:
        self.tasks[id(task)] = task
        keys = self._sorted.setdefault(task.model.name, [])
        for row in task.rows:
            self._waiting[row.row_id] = row
            self._fifo.append(row)
            bisect.insort(keys, (row.length, row.row_id))

    def abort(self, task: PoolingTask) -> None:
        """The client left (or the task failed): its waiting rows go now, running ones are ignored."""
        task.aborted = True
        self.tasks.pop(id(task), None)
        keys = self._sorted.get(task.model.name, [])
        for row in task.rows:
            if self._waiting.pop(row.row_id, None) is not None:
                del keys[bisect.bisect_left(keys, (row.length, row.row_id))]

    def pending(self) -> int:
        return len(self.tasks)

    # ---- the plan ----

    def schedule(self) -> PoolingBatch | None:
        while self._fifo and self._fifo[0].row_id not in self._waiting:
            self._fifo.popleft()
        if not self._fifo:
            return None
        budget = self.max_tokens
        if self.others_stepping():
            if time.monotonic() < self._resume_at:
                return None  # a step for the others alone
            budget = self.busy_tokens
        head = self._fifo[0]
        keys = self._sorted[head.model]
        lo, hi = self._window(keys, bisect.bisect_left(keys, (head.length, head.row_id)), budget)
        taken = keys[lo : hi + 1]
        del keys[lo : hi + 1]
        rows = tuple(self._waiting.pop(row_id) for _, row_id in taken)
        return PoolingBatch(head.model, rows)

    def _window(self, keys: list[RowKey], pos: int, budget: int) -> tuple[int, int]:
        """The run of sorted rows around `pos` that this step takes: [lo, hi]."""
        lo = hi = pos
        shortest = longest = keys[pos][0]
        while hi - lo + 1 < self.max_rows:
            n = hi - lo + 1
            options: list[tuple[int, int]] = []  # (padding it adds, -1: take the shorter / +1: longer)
            if lo > 0:
                length = keys[lo - 1][0]
                if _fits(length, longest) and (n + 1) * longest <= budget:
                    options.append((longest - length, -1))
            if hi + 1 < len(keys):
                length = keys[hi + 1][0]
                if _fits(shortest, length) and (n + 1) * length <= budget:
                    options.append((n * (length - longest), 1))
            if not options:
                break
            if min(options)[1] < 0:
                lo -= 1
                shortest = keys[lo][0]
            else:
                hi += 1
                longest = keys[hi][0]
        return lo, hi

    # ---- results ----

    def postprocess(self, batch: PoolingBatch, result: PoolingResult) -> None:
        self._resume_at = time.monotonic() + result.seconds * (1 / LIVE_SHARE - 1)
        for row, vector in zip(batch.rows, result.vectors, strict=True):
            task = row.task
            if task.aborted or task.done or not task.record(row, vector):
                continue
            self.tasks.pop(id(task), None)
            try:
                task.finish(task.output())
            except Exception as exc:  # a bug in the finishing touches fails this request only
                task.finish(exc)

    def fail(self, batch: PoolingBatch, error: BaseException) -> None:
        """The forward raised: the batch's requests end with `error`; their other rows are dropped."""
        for task in {id(row.task): row.task for row in batch.rows}.values():
            if not task.done:
                task.finish(error)
            self.abort(task)

    def fail_all(self, error: BaseException) -> None:
        """Shutdown: every unfinished request gets `error`."""
        for task in list(self.tasks.values()):
            if not task.done:
                task.finish(error)
        self.tasks.clear()
        self._fifo.clear()
        self._sorted.clear()
        self._waiting.clear()


def _fits(short: int, long: int) -> bool:
    return long <= MAX_PAD_RATIO * short + PAD_SLACK_TOKENS
