"""The speech synthesis scheduler: which pieces of text the next step speaks. Pure Python.

Every request is one piece of text (a sentence or clause). Pieces wait in two queues: live conversations
(REALTIME) are always taken before HTTP work. Within a queue, pieces that share a request_id (the
sentences of one HTTP request, one reply) keep their order, and different request_ids take turns, so a
long text does not hold back the first audio of a request that came after it. A step speaks pieces until a
character budget is spent (at least one piece), so its wall time stays bounded. While another lane steps
(a live caption's Whisper decode, a token stream), the budget shrinks to one piece, and HTTP pieces take at
most HTTP_SHARE of the inference thread's time: a step without synthesis comes between them.

Padded batches through the VITS model are not used: on a 2-core CPU a batch of 4 sentences took 1.3-1.6x
as long as the same 4 one after another (the decoder runs over the longest one's length for every row;
clients/bench_tts.py measures it). Pieces of one step run one at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.tts.request import SpeechOutput, SpeechPriority

HTTP_SHARE = 0.25  # while another lane steps: the most of the inference thread's time HTTP synthesis takes

_ids = itertools.count()


@dataclass
class SpeechTask:
    """One accepted request: a piece of text for one voice, and where its audio goes."""

    text: str
    voice: str
    length_scale: float  # Piper's: 1 / speed
    priority: SpeechPriority
    outputs: asyncio.Queue[SpeechOutput | BaseException]
    group: str = ""  # the request_id: pieces of one group are spoken in order, groups take turns
    task_id: int = field(default_factory=lambda: next(_ids))
    aborted: bool = False
    done: bool = False

    def finish(self, result: SpeechOutput | BaseException) -> None:
        self.done = True
        self.outputs.put_nowait(result)


@dataclass(frozen=True)
class SpeechJob:
    """What the runner reads for one piece."""

    task_id: int
    text: str
    voice: str
    length_scale: float


@dataclass(frozen=True)
class SpeechBatch:
    jobs: tuple[SpeechJob, ...]
    http: bool  # whether any HTTP piece is in it (HTTP_SHARE spacing applies)


@dataclass(frozen=True)
class SpokenPiece:
    pcm: bytes  # PCM16 LE mono
    sample_rate: int


@dataclass(frozen=True)
class SpeechResult:
    pieces: tuple[SpokenPiece, ...]  # one per job, in order
    seconds: float  # the step's synthesis wall time


class TTSScheduler:
    def __init__(self, max_chars: int, busy_chars: int, others_stepping: Callable[[], bool]) -> None:
        self.max_chars = max_chars  # characters per step when nothing else runs
        self.busy_chars = busy_chars  # ... while another lane steps
        self.others_stepping = others_stepping
        self._resume_http_at = 0.0
        # Per priority: request_id -> its waiting pieces; the first group is the next to take a turn.
        self._queues: dict[SpeechPriority, OrderedDict[str, deque[SpeechTask]]] = {
            p: OrderedDict() for p in SpeechPriority
        }
        self.tasks: dict[int, SpeechTask] = {}  # unfinished, by task_id
        # Figures for stats: pieces spoken, seconds of audio made, seconds spent making them.
        self.pieces_total = 0
        self.audio_seconds_total = 0.0
        self.synthesis_seconds_total = 0.0

    # ---- requests ----

    def add(self, task: SpeechTask) -> None:
        self.tasks[task.task_id] = task
        self._queues[task.priority].setdefault(task.group, deque()).append(task)

    def abort(self, task: SpeechTask) -> None:
        """The client left: a waiting piece is never spoken; a running one's audio is dropped."""
        task.aborted = True
        self.tasks.pop(task.task_id, None)

    def pending(self) -> int:
        return len(self.tasks)

    def waiting(self) -> int:
        return sum(1 for groups in self._queues.values() for q in groups.values() for t in q if not t.aborted)

    # ---- the plan ----

    def schedule(self) -> SpeechBatch | None:
        busy = self.others_stepping()
        budget = self.busy_chars if busy else self.max_chars
        http_allowed = not busy or time.monotonic() >= self._resume_http_at
        taken: list[SpeechTask] = []
        for priority in SpeechPriority:
            if priority == SpeechPriority.HTTP and not http_allowed:
                break
            if not self._take_turns(self._queues[priority], taken, budget):
                break
        if not taken:
            return None
        jobs = tuple(SpeechJob(t.task_id, t.text, t.voice, t.length_scale) for t in taken)
        return SpeechBatch(jobs, http=any(t.priority == SpeechPriority.HTTP for t in taken))

    def _take_turns(
        self, groups: OrderedDict[str, deque[SpeechTask]], taken: list[SpeechTask], budget: int
    ) -> bool:
        """Adds pieces to `taken`, one group's turn at a time; False once the step's budget is spent."""
        while groups:
            group, queue = next(iter(groups.items()))
            while queue and queue[0].aborted:
                queue.popleft()
            if not queue:
                del groups[group]
                continue
            chars = sum(len(t.text) for t in taken)
            if taken and chars + len(queue[0].text) > budget:
                return False
            taken.append(queue.popleft())
            if queue:
                groups.move_to_end(group)
            else:
                del groups[group]
        return sum(len(t.text) for t in taken) < budget

    # ---- results ----

    def postprocess(self, batch: SpeechBatch, result: SpeechResult) -> None:
        if batch.http:
            self._resume_http_at = time.monotonic() + result.seconds * (1 / HTTP_SHARE - 1)
        self.synthesis_seconds_total += result.seconds
        for job, piece in zip(batch.jobs, result.pieces, strict=True):
            self.pieces_total += 1
            self.audio_seconds_total += len(piece.pcm) / 2 / piece.sample_rate
            task = self.tasks.pop(job.task_id, None)
            if task is None or task.aborted or task.done:
                continue
            task.finish(SpeechOutput(piece.pcm, piece.sample_rate, finished=True))

    def fail(self, batch: SpeechBatch, error: BaseException) -> None:
        for job in batch.jobs:
            task = self.tasks.pop(job.task_id, None)
            if task is not None and not task.done:
                task.finish(error)

    def fail_all(self, error: BaseException) -> None:
        for task in list(self.tasks.values()):
            if not task.done:
                task.finish(error)
        self.tasks.clear()
        for queue in self._queues.values():
            queue.clear()
