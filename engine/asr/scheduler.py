"""The ASR scheduler: which Whisper windows start, merge, step or stop each engine step. Pure Python.

Requests become <= 30 s windows (engine/asr/task.py); windows from every request and session are encoded
together and decoded step by step. Each decoding group has an integer batch id: the plan names ids, the
runner keeps the tensors under them, and the result comes back as plain data under the same ids.

Policy, all of it here:
- Priorities: REALTIME (a live turn's final decode), then PREVIEW (a live turn's partial re-decode), then
  BATCH (HTTP). A quarter of `max_batch` is kept for the live priorities.
- `max_encode` windows start per step (on a CPU an encoder batch costs the sum of its windows).
- `realtime_runs_alone` (CPU): a REALTIME window starts in a group of its own and nothing else starts
  until it is done; groups in flight go on decoding beside it.
- Live previews are shed (they end with `skipped`, and the session asks again later) while a final is
  waiting or decoding ("finals first"), or while `preview_max_windows` other windows are queued or
  decoding.
- `preview_order` "fair": waiting previews are ordered before shedding and starting: a live turn's first
  preview (its `live_stream` not yet served) goes first, then the turns served longest ago, so under load
  the previews that run are spread across sessions. "fifo" (the old policy): in order of arrival.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from engine.asr.job import WhisperRowOutput
from engine.asr.plan import ASRPlan, ASRResult, BatchStart, MergedBatch, ModelStep, RowCancel
from engine.asr.task import TranscriptionTask, WindowWork, window_works
from engine.request import Priority, TranscriptionOutput
from engine.stats import EngineStats

MAX_TRACKED_STREAMS = 4096  # live turns whose last preview start the fair order remembers


@dataclass(eq=False)
class DecodeGroup:
    """Windows decoding together as the runner's batch `batch_id`."""

    batch_id: int
    model: str
    windows: list[WindowWork]
    finished: list[bool] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.finished = [False] * len(self.windows)

    @property
    def done(self) -> bool:
        return all(f or i in self.cancelled for i, f in enumerate(self.finished))

    @property
    def in_flight(self) -> int:
        """Windows counted as decoding (for the batch limit and the stats)."""
        return 0 if self.done else len(self.windows) - len(self.cancelled)

    @property
    def holds_realtime(self) -> bool:
        """A REALTIME window (a live turn's final decode) is still decoding in this group."""
        return any(
            w.task.request.priority is Priority.REALTIME and not (f or i in self.cancelled)
            for i, (w, f) in enumerate(zip(self.windows, self.finished, strict=True))
        )


class ASRScheduler:
    def __init__(
        self,
        max_batch: int,
        stats: EngineStats,
        max_encode: int | None = None,
        realtime_runs_alone: bool = False,
        preview_max_windows: int = 8,
        preview_order: Literal["fair", "fifo"] = "fair",
    ) -> None:
        self.max_batch = max_batch
        # Windows encoded in one step. On a CPU an encoder batch costs the sum of its windows, so
        # a big one only holds up everything queued behind it; decoder steps still batch well.
        self.max_encode = max_encode or max_batch
        # On a CPU a start (an encoder pass, 50-80 ms) would stretch each of a final's decoder steps
        # (~5-12 ms), and a final drafted from the turn's last partial needs only a few of them. Measured
        # at 16 live sessions (int8): p95 final latency 0.44 s this way, 0.94 s when other finals could
        # still start beside a running one.
        self.realtime_runs_alone = realtime_runs_alone
        self.preview_max_windows = preview_max_windows
        self.preview_order = preview_order
        # live_stream -> when its latest preview started (a count of preview starts), oldest first
        self._preview_served: dict[str, int] = {}
        self._preview_starts = itertools.count()
        self.stats = stats
        self.waiting: dict[Priority, deque[WindowWork]] = {p: deque() for p in Priority}
        self.running: list[DecodeGroup] = []
        self.tasks: dict[int, TranscriptionTask] = {}  # unfinished, not aborted
        self._batch_ids = itertools.count()

    # ---- requests ----

    def add(self, task: TranscriptionTask) -> None:
        self.tasks[task.task_id] = task
        self.waiting[task.request.priority].extend(window_works(task))
        self._update_stats()

    def abort(self, task: TranscriptionTask) -> None:
        """The client left: its windows are dropped or cancelled at the next schedule()."""
        if not task.done:
            task.aborted = True

    def pending(self) -> int:
        return sum(1 for t in self.tasks.values() if not (t.done or t.aborted))

    def live_batches(self) -> frozenset[int]:
        """The batch ids whose rows are still decoding, as far as the scheduler knows."""
        return frozenset(g.batch_id for g in self.running if not g.done)

    # ---- the plan ----

    def schedule(self) -> ASRPlan | None:
        cancels = self._cancel_aborted()
        self.running = [g for g in self.running if not g.done]
        for queue in self.waiting.values():
            for work in [w for w in queue if w.task.aborted or w.task.done]:
                queue.remove(work)
        self._shed_previews()
        new_group = self._form_group()
        groups = ([new_group] if new_group else []) + self.running
        if new_group:
            self.running.append(new_group)
        self._update_stats()
        if not groups:
            # Nothing decodes on: any cancelled rows' batches are simply forgotten by the runner.
            return None
        return ASRPlan(cancels=tuple(cancels), models=self._model_steps(groups, new_group))

    def _cancel_aborted(self) -> list[RowCancel]:
        cancels: list[RowCancel] = []
        for group in self.running:
            for i, work in enumerate(group.windows):
                if work.task.aborted and not group.finished[i] and i not in group.cancelled:
                    group.cancelled.add(i)
                    cancels.append(RowCancel(group.batch_id, i))
        return cancels

    def _model_steps(self, groups: list[DecodeGroup], new: DecodeGroup | None) -> tuple[ModelStep, ...]:
        """Per model, in order of first appearance: the new group first, then the running ones."""
        by_model: dict[str, list[DecodeGroup]] = {}
        for group in groups:
            by_model.setdefault(group.model, []).append(group)
        steps = []
        for model, same in by_model.items():
            starts = tuple(BatchStart(g.batch_id, tuple(w.job for w in g.windows)) for g in same if g is new)
            running = tuple(g.batch_id for g in same if g is not new)
            merged_id = next(self._batch_ids) if len(same) > 1 else None
            steps.append(ModelStep(model, starts, running, merged_id))
        return tuple(steps)

    def _shed_previews(self) -> None:
        """End waiting previews that should not run: a final is waiting or decoding, or too many other
        windows are. Counted for a preview: every window decoding (but its own), every REALTIME and BATCH
        window queued, and the windows of the previews kept ahead of it."""
        previews = self.waiting[Priority.PREVIEW]
        if not previews:
            return
        if self.preview_order == "fair":
            previews = deque(sorted(previews, key=self._preview_rank))
        finals = bool(self.waiting[Priority.REALTIME]) or any(g.holds_realtime for g in self.running)
        busy = sum(g.in_flight for g in self.running)
        busy += len(self.waiting[Priority.REALTIME]) + len(self.waiting[Priority.BATCH])
        own_running = Counter(
            w.task.task_id
            for g in self.running
            if not g.done
            for i, w in enumerate(g.windows)
            if i not in g.cancelled
        )
        decided: dict[int, bool] = {}
        kept: deque[WindowWork] = deque()
        for work in previews:
            task = work.task
            if task.task_id not in decided:
                others = busy - own_running[task.task_id]
                decided[task.task_id] = not finals and others < self.preview_max_windows
                if not decided[task.task_id]:
                    task.finish(TranscriptionOutput(text="", skipped=True))
            if decided[task.task_id]:
                kept.append(work)
                busy += 1
        self.waiting[Priority.PREVIEW] = kept

    def _preview_rank(self, work: WindowWork) -> tuple[int, int]:
        """First previews of a turn first, then the turns whose last preview started longest ago."""
        stream = work.task.request.live_stream
        if stream is None or stream not in self._preview_served:
            return (0, 0)
        return (1, self._preview_served[stream])

    def _served_preview(self, work: WindowWork) -> None:
        stream = work.task.request.live_stream
        if stream is None:
            return
        self._preview_served.pop(stream, None)
        self._preview_served[stream] = next(self._preview_starts)
        if len(self._preview_served) > MAX_TRACKED_STREAMS:  # turns long over: forget the oldest
            del self._preview_served[next(iter(self._preview_served))]

    def _form_group(self) -> DecodeGroup | None:
        """The most urgent waiting window picks the model; the group fills with that model's windows,
        up to `max_batch` windows in flight across all groups (1: strictly one decode at a time)."""
        first = next((q[0] for p in Priority if (q := self.waiting[p])), None)
        if first is None:
            return None
        in_flight = sum(g.in_flight for g in self.running)
        model = first.task.request.model
        priorities = list(Priority)
        if self.realtime_runs_alone:
            if any(g.holds_realtime for g in self.running):
                return None
            if first.task.request.priority is Priority.REALTIME:
                priorities = [Priority.REALTIME]
        picked: list[WindowWork] = []
        for priority in priorities:
            # A quarter of the capacity is kept for live sessions, so HTTP work cannot crowd them out.
            cap = self.max_batch - (self.max_batch // 4 if priority is Priority.BATCH else 0)
            room = min(cap - in_flight, self.max_encode) - len(picked)
            if room <= 0:
                continue
            queue = self.waiting[priority]
            for work in [w for w in queue if w.task.request.model == model][:room]:
                queue.remove(work)
                picked.append(work)
                if priority is Priority.PREVIEW:
                    self._served_preview(work)
        if not picked:
            return None
        group = DecodeGroup(next(self._batch_ids), model, picked)
        self.stats.asr_windows_total += len(picked)
        self._count_batch(group)
        return group

    # ---- results ----

    def postprocess(self, result: ASRResult) -> None:
        for merge in result.merges:
            self._merge(merge)
        by_id = {g.batch_id: g for g in self.running}
        for batch_id, rows in result.outputs.items():
            if batch_id in by_id:
                self._record(by_id[batch_id], rows)
        for batch_id, error in result.errors.items():
            if batch_id in by_id:
                self._fail_group(by_id[batch_id], error)
        self._update_stats()

    def _merge(self, merge: MergedBatch) -> None:
        """The source groups now decode as one batch."""
        by_id = {g.batch_id: g for g in self.running}
        windows: list[WindowWork] = []
        cancelled: set[int] = set()
        model = ""
        for source_id, rows in merge.kept:
            source = by_id[source_id]
            model = source.model
            for i in rows:
                if i in source.cancelled:
                    cancelled.add(len(windows))
                windows.append(source.windows[i])
        sources = {source_id for source_id, _ in merge.kept}
        self.running = [g for g in self.running if g.batch_id not in sources]
        merged = DecodeGroup(merge.batch_id, model, windows)
        merged.cancelled = cancelled
        self.running.append(merged)
        self._count_batch(merged)

    def _count_batch(self, group: DecodeGroup) -> None:
        size = len(group.windows)
        self.stats.asr_last_batch_size = size
        self.stats.asr_max_batch_size = max(self.stats.asr_max_batch_size, size)
        if len({w.task.task_id for w in group.windows}) > 1:
            self.stats.asr_multi_request_batches += 1

    def _record(self, group: DecodeGroup, rows: list[WhisperRowOutput]) -> None:
        touched: dict[int, TranscriptionTask] = {}
        for i, (work, row) in enumerate(zip(group.windows, rows, strict=True)):
            if i in group.cancelled or group.finished[i]:
                continue
            group.finished[i] = row.finished
            if row.finished:
                self.stats.asr_draft_tokens += row.draft_tokens
                self.stats.asr_draft_accepted += row.draft_accepted
            work.task.window_outputs[work.index] = row
            touched[work.task.task_id] = work.task
        for task in touched.values():
            if not task.aborted and not task.done and task.stream():
                self.stats.asr_requests_finished += 1

    def _fail_group(self, group: DecodeGroup, error: BaseException) -> None:
        if group in self.running:
            self.running.remove(group)
        for work in group.windows:
            if not work.task.done:
                work.task.finish(error)

    def fail(self, plan: ASRPlan, error: BaseException) -> None:
        """The whole run raised: every group the plan named fails with `error`."""
        named = {i for step in plan.models for i in step.batch_ids}
        for group in [g for g in self.running if g.batch_id in named]:
            self._fail_group(group, error)
        self._update_stats()

    def fail_all(self, error: BaseException) -> None:
        """Shutdown: every unfinished request gets `error`."""
        tasks = {w.task.task_id: w.task for q in self.waiting.values() for w in q}
        tasks.update({w.task.task_id: w.task for g in self.running for w in g.windows})
        tasks.update(self.tasks)
        for task in tasks.values():
            if not task.done:
                task.finish(error)
        for queue in self.waiting.values():
            queue.clear()
        self.running.clear()
        self._update_stats()

    def _update_stats(self) -> None:
        self.tasks = {i: t for i, t in self.tasks.items() if not (t.done or t.aborted)}
        self.stats.asr_waiting = sum(len(q) for q in self.waiting.values())
        self.stats.asr_running = sum(g.in_flight for g in self.running)
