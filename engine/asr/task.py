"""One transcription request as the ASR scheduler tracks it: its <= 30 s windows, their latest text, and
what has been streamed out so far. Pure Python."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from audio.constants import SAMPLE_RATE
from audio.segment import split_windows
from engine.asr.job import WhisperJob, WhisperRowOutput, WhisperSegment
from engine.request import TranscriptionOutput, TranscriptionRequest, TranscriptionResult, TranscriptSegment

# With timestamps, Whisper leaves out a segment that runs up to the end of its 30 s window (it
# expects the next window to start there); a shorter window keeps every segment clear of the edge.
TIMESTAMP_WINDOW_S = 25.0
WINDOW_S = 30.0

_task_ids = itertools.count()


@dataclass(eq=False)  # identity: fields hold audio arrays
class TranscriptionTask:
    request: TranscriptionRequest
    windows: list[tuple[int, int]]  # sample ranges
    outputs: asyncio.Queue[TranscriptionOutput | BaseException]
    task_id: int = field(default_factory=lambda: next(_task_ids))
    window_outputs: list[WhisperRowOutput | None] = field(default_factory=list)
    released: str = ""  # text streamed out so far
    aborted: bool = False  # the client left
    done: bool = False  # its last output (or error) is queued

    def __post_init__(self) -> None:
        self.window_outputs = [None] * len(self.windows)

    def finish(self, last: TranscriptionOutput | BaseException) -> None:
        self.done = True
        self.outputs.put_nowait(last)

    def stream(self) -> bool:
        """Release text for the windows decoded so far, in order; True when the request is finished."""
        parts: list[str] = []
        all_done = True
        for out in self.window_outputs:
            if out is None:
                all_done = False
                break
            parts.append(out.text.strip())
            if not out.finished:
                all_done = False
                break
        text = " ".join(p for p in parts if p)
        if all_done:
            result = self._result(text.rstrip())
            delta = result.text[len(self.released) :] if result.text.startswith(self.released) else ""
            self.finish(TranscriptionOutput(text=delta, result=result))
            return True
        # Hold back trailing space and half-decoded characters: they may not survive.
        text = text.rstrip().rstrip("\ufffd")
        if len(text) > len(self.released) and text.startswith(self.released):
            delta = text[len(self.released) :]
            self.released = text
            self.outputs.put_nowait(TranscriptionOutput(text=delta))
        return False

    def _result(self, text: str) -> TranscriptionResult:
        segments: list[TranscriptSegment] = []
        tokens = 0
        for (start, _), out in zip(self.windows, self.window_outputs, strict=True):
            assert out is not None
            tokens += out.num_tokens
            offset = start / SAMPLE_RATE
            for seg in out.segments:
                if seg.text.strip():
                    segments.append(_segment(len(segments), offset, seg, out))
        # Silence says nothing about the language: the first window with speech does.
        heard = [out for out in self.window_outputs if out is not None and not out.no_speech]
        language = heard[0].language if heard else (self.request.language or "en")
        # The streamed prefix is kept even if a later window changed its mind about spacing.
        if self.released and not text.startswith(self.released):
            text = self.released + " " + text[len(self.released) :].lstrip()
        duration = len(self.request.audio) / SAMPLE_RATE
        logprobs = [lp for out in self.window_outputs if out is not None for lp in out.logprobs]
        return TranscriptionResult(
            text=text, language=language, duration=duration, segments=segments, tokens=tokens,
            logprobs=logprobs,
        )  # fmt: skip


def _segment(index: int, offset: float, seg: WhisperSegment, window: WhisperRowOutput) -> TranscriptSegment:
    """A window's segment in the request's time, with the window's confidence figures."""
    return TranscriptSegment(
        index, offset + seg.start, offset + seg.end, seg.text.strip(), seg.tokens,
        avg_logprob=window.avg_logprob, compression_ratio=seg.compression_ratio,
        no_speech_prob=window.no_speech_prob,
    )  # fmt: skip


@dataclass(eq=False)  # identity: fields hold audio arrays
class WindowWork:
    """One window of a task, waiting or decoding."""

    task: TranscriptionTask
    index: int
    job: WhisperJob


def make_task(request: TranscriptionRequest, outputs: asyncio.Queue) -> TranscriptionTask:
    max_seconds = TIMESTAMP_WINDOW_S if request.with_timestamps else WINDOW_S
    windows = split_windows(request.audio, SAMPLE_RATE, max_seconds) if len(request.audio) else [(0, 0)]
    return TranscriptionTask(request, windows, outputs)


def window_works(task: TranscriptionTask) -> list[WindowWork]:
    """The task's windows as jobs: the prompt and the draft go with the first window only."""
    req = task.request
    works = []
    for i, (start, end) in enumerate(task.windows):
        job = WhisperJob(
            audio=req.audio[start:end], language=req.language, task=req.task,
            prompt=req.prompt if i == 0 else None, temperature=req.temperature,
            encoder_context=req.encoder_context, min_context_s=req.min_context_s,
            with_timestamps=req.with_timestamps, draft_tokens=req.draft_tokens if i == 0 else None,
        )  # fmt: skip
        works.append(WindowWork(task, i, job))
    return works
