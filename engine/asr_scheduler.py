"""Batched Whisper work: requests become <= 30 s windows; windows from every request and
session are encoded together and decoded step by step, alongside the LLM's steps."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from audio.segment import split_windows
from engine.request import (
    Priority,
    TranscriptionOutput,
    TranscriptionRequest,
    TranscriptionResult,
    TranscriptSegment,
)
from engine.stats import EngineStats
from engine.whisper_runner import WhisperJob, WhisperRowOutput

SAMPLE_RATE = 16000
_task_ids = itertools.count()


@dataclass(eq=False)  # identity: fields hold audio arrays
class TranscriptionTask:
    """One request: its windows, their latest text, and what has been streamed out."""

    request: TranscriptionRequest
    windows: list[tuple[int, int]]  # sample ranges
    outputs: asyncio.Queue[TranscriptionOutput | BaseException]
    task_id: int = field(default_factory=lambda: next(_task_ids))
    window_outputs: list[WhisperRowOutput | None] = field(default_factory=list)
    released: str = ""
    aborted: bool = False
    done: bool = False

    def __post_init__(self) -> None:
        self.window_outputs = [None] * len(self.windows)


@dataclass(eq=False)  # identity: fields hold audio arrays
class WindowWork:
    task: TranscriptionTask
    index: int
    job: WhisperJob


@dataclass(eq=False)
class WhisperGroup:
    """Windows decoding together. `handle` is the runner's batch, created on the inference thread."""

    model: str
    windows: list[WindowWork]
    handle: Any = None
    finished: list[bool] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.finished = [False] * len(self.windows)

    @property
    def done(self) -> bool:
        return all(f or i in self.cancelled for i, f in enumerate(self.finished))

    @property
    def holds_realtime(self) -> bool:
        """A REALTIME window (a live turn's final decode) is still decoding in this group."""
        return any(
            w.task.request.priority is Priority.REALTIME and not (f or i in self.cancelled)
            for i, (w, f) in enumerate(zip(self.windows, self.finished, strict=True))
        )

    @classmethod
    def merged(cls, groups: list[WhisperGroup], kept: list[list[int]], handle: Any) -> WhisperGroup:
        """The group for a runner batch merged from `groups`; `kept` says which rows of each it holds."""
        windows: list[WindowWork] = []
        cancelled: set[int] = set()
        for group, rows in zip(groups, kept, strict=True):
            for i in rows:
                if i in group.cancelled:
                    cancelled.add(len(windows))
                windows.append(group.windows[i])
        merged = cls(groups[0].model, windows, handle)
        merged.cancelled = cancelled
        return merged


@dataclass
class ASRWork:
    new_groups: list[WhisperGroup]  # encode + first decode step
    running_groups: list[WhisperGroup]  # one more decode step each
    cancels: list[tuple[WhisperGroup, int]]

    @property
    def empty(self) -> bool:
        return not (self.new_groups or self.running_groups)


class ASRScheduler:
    def __init__(
        self,
        max_batch: int,
        stats: EngineStats,
        max_encode: int | None = None,
        realtime_runs_alone: bool = False,
    ) -> None:
        self.max_batch = max_batch
        # Windows encoded in one step. On a CPU an encoder batch costs the sum of its windows, so
        # a big one only holds up everything queued behind it; decoder steps still batch well.
        self.max_encode = max_encode or max_batch
        # A REALTIME window (a turn's final decode) starts in a group of its own, and nothing else
        # starts until it is done; groups already in flight go on decoding beside it. On a CPU a
        # start (an encoder pass, 50-80 ms) would stretch each of the final's decoder steps (~5-12 ms),
        # and a final drafted from the turn's last partial needs only a few of them. Measured at 16
        # live sessions (int8): p95 final latency 0.44 s this way, 0.94 s when other finals could
        # still start beside a running one.
        self.realtime_runs_alone = realtime_runs_alone
        self.stats = stats
        self.waiting: dict[Priority, deque[WindowWork]] = {p: deque() for p in Priority}
        self.running: list[WhisperGroup] = []

    def add(self, task: TranscriptionTask) -> None:
        req = task.request
        for i, (start, end) in enumerate(task.windows):
            job = WhisperJob(
                audio=req.audio[start:end], language=req.language, task=req.task,
                prompt=req.prompt if i == 0 else None, temperature=req.temperature,
                encoder_context=req.encoder_context, min_context_s=req.min_context_s,
                with_timestamps=req.with_timestamps,
                draft_tokens=req.draft_tokens if i == 0 else None,
            )  # fmt: skip
            self.waiting[req.priority].append(WindowWork(task, i, job))
        self._update_stats()

    def has_work(self) -> bool:
        return bool(self.running) or any(self.waiting.values())

    def schedule(self) -> ASRWork:
        cancels: list[tuple[WhisperGroup, int]] = []
        for group in self.running:
            for i, work in enumerate(group.windows):
                if work.task.aborted and not group.finished[i] and i not in group.cancelled:
                    group.cancelled.add(i)
                    cancels.append((group, i))
        self.running = [g for g in self.running if not g.done]
        for queue in self.waiting.values():
            for work in [w for w in queue if w.task.aborted]:
                queue.remove(work)
        new_group = self._form_group()
        work = ASRWork([new_group] if new_group else [], list(self.running), cancels)
        if new_group:
            self.running.append(new_group)
        self._update_stats()
        return work

    def _form_group(self) -> WhisperGroup | None:
        """The most urgent waiting window picks the model; the group fills with that model's windows,
        up to `max_batch` windows in flight across all groups (1: strictly one decode at a time)."""
        first = next((q[0] for p in Priority if (q := self.waiting[p])), None)
        if first is None:
            return None
        in_flight = sum(len(g.windows) - len(g.cancelled) for g in self.running if not g.done)
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
        if not picked:
            return None
        group = WhisperGroup(model, picked)
        self.stats.asr_last_batch_size = len(picked)
        self.stats.asr_max_batch_size = max(self.stats.asr_max_batch_size, len(picked))
        self.stats.asr_windows_total += len(picked)
        if len({w.task.task_id for w in picked}) > 1:
            self.stats.asr_multi_request_batches += 1
        return group

    def replace(self, groups: list[WhisperGroup], merged: WhisperGroup) -> None:
        """`groups` now decode as one batch."""
        self.running = [g for g in self.running if not any(g is old for old in groups)]
        self.running.append(merged)
        self.stats.asr_last_batch_size = len(merged.windows)
        self.stats.asr_max_batch_size = max(self.stats.asr_max_batch_size, len(merged.windows))
        if len({w.task.task_id for w in merged.windows}) > 1:
            self.stats.asr_multi_request_batches += 1

    def fail_group(self, group: WhisperGroup, error: BaseException) -> None:
        if group in self.running:
            self.running.remove(group)
        for work in group.windows:
            if not work.task.done:
                work.task.done = True
                work.task.outputs.put_nowait(error)

    def postprocess(self, group: WhisperGroup, rows: list[WhisperRowOutput]) -> None:
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
            if not task.aborted and not task.done:
                self._stream(task)
        self._update_stats()

    def _stream(self, task: TranscriptionTask) -> None:
        """Release text for the windows decoded so far, in order; finish when all are done."""
        parts: list[str] = []
        all_done = True
        for out in task.window_outputs:
            if out is None:
                all_done = False
                break
            parts.append(out.text.strip())
            if not out.finished:
                all_done = False
                break
        text = " ".join(p for p in parts if p)
        if all_done:
            result = self._result(task, text.rstrip())
            delta = result.text[len(task.released) :] if result.text.startswith(task.released) else ""
            task.done = True
            self.stats.asr_requests_finished += 1
            task.outputs.put_nowait(TranscriptionOutput(text=delta, result=result))
            return
        # Hold back trailing space and half-decoded characters: they may not survive.
        text = text.rstrip().rstrip("\ufffd")
        if len(text) > len(task.released) and text.startswith(task.released):
            delta = text[len(task.released) :]
            task.released = text
            task.outputs.put_nowait(TranscriptionOutput(text=delta))

    def _result(self, task: TranscriptionTask, text: str) -> TranscriptionResult:
        segments: list[TranscriptSegment] = []
        tokens = 0
        for (start, _), out in zip(task.windows, task.window_outputs, strict=True):
            assert out is not None
            tokens += out.num_tokens
            offset = start / SAMPLE_RATE
            for seg in out.segments:
                if seg.text.strip():
                    segments.append(
                        TranscriptSegment(
                            len(segments), offset + seg.start, offset + seg.end, seg.text.strip(), seg.tokens
                        )
                    )
        first = task.window_outputs[0]
        language = first.language if first is not None else (task.request.language or "en")
        # The streamed prefix is kept even if a later window changed its mind about spacing.
        if task.released and not text.startswith(task.released):
            text = task.released + " " + text[len(task.released) :].lstrip()
        duration = len(task.request.audio) / SAMPLE_RATE
        return TranscriptionResult(
            text=text, language=language, duration=duration, segments=segments, tokens=tokens
        )

    def fail_all(self, error: BaseException) -> None:
        """Shutdown: every unfinished request gets `error`."""
        tasks = {w.task.task_id: w.task for q in self.waiting.values() for w in q}
        tasks.update({w.task.task_id: w.task for g in self.running for w in g.windows})
        for task in tasks.values():
            if not task.done:
                task.done = True
                task.outputs.put_nowait(error)
        for queue in self.waiting.values():
            queue.clear()
        self.running.clear()

    def _update_stats(self) -> None:
        self.stats.asr_waiting = sum(len(q) for q in self.waiting.values())
        self.stats.asr_running = sum(len(g.windows) - len(g.cancelled) for g in self.running if not g.done)


# With timestamps, Whisper leaves out a segment that runs up to the end of its 30 s window (it
# expects the next window to start there); a shorter window keeps every segment clear of the edge.
TIMESTAMP_WINDOW_S = 25.0


def make_task(request: TranscriptionRequest, outputs: asyncio.Queue) -> TranscriptionTask:
    max_seconds = TIMESTAMP_WINDOW_S if request.with_timestamps else 30.0
    windows = split_windows(request.audio, SAMPLE_RATE, max_seconds) if len(request.audio) else [(0, 0)]
    return TranscriptionTask(request, windows, outputs)
