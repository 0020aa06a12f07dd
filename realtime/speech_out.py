"""A spoken reply: LLM text -> clauses (engine/tts/segmenter.py) -> the engine's TTS lane -> audio deltas.

Each clause goes to the engine the moment the segmenter completes it, while the LLM still writes the rest
(the TTS lane batches the clauses of every session); the audio leaves strictly in clause order, resampled
from the voice's rate to the session's output format: audio/pcm is PCM16 at 24 kHz, audio/pcmu and
audio/pcma are G.711 at 8 kHz.

Truncation (conversation.item.truncate) maps played audio back to text this way (documented rule): every
clause whose audio was played in full keeps its text; the clause being played keeps the share of its
characters equal to the share of its audio that was played, cut back to the last whole word; later clauses
are dropped. The text kept is what the next turn's context holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import soxr

from audio.g711 import G711_SAMPLE_RATE, encode_pcma, encode_pcmu
from engine.interface import EngineClient
from engine.tts.request import SpeechPriority, SpeechRequest
from engine.tts.segmenter import ClauseSegmenter

PCM_OUTPUT_RATE = 24000  # audio/pcm, as OpenAI's realtime API
DELTA_MS = 200  # the most audio one response.output_audio.delta carries
AUDIO_TOKENS_PER_SECOND = 20  # usage.output_token_details.audio_tokens: one per 50 ms, as OpenAI bills


def output_rate(encoding: str) -> int:
    return PCM_OUTPUT_RATE if encoding == "pcm16" else G711_SAMPLE_RATE


def audio_tokens(samples: int, rate: int) -> int:
    """Audio output tokens for `samples` at `rate` (whole 50 ms units, rounded up)."""
    return -(-samples * AUDIO_TOKENS_PER_SECOND // rate)


@dataclass
class SpokenClause:
    start: int  # where the clause's text starts in the reply's transcript
    end: int  # ... and ends
    samples: int = 0  # output samples emitted for it


@dataclass
class SpokenAudio:
    """The audio of an assistant item as sent: its clauses, in order, at `rate`."""

    rate: int
    clauses: list[SpokenClause] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return sum(c.samples for c in self.clauses)

    @property
    def ms(self) -> int:
        return self.samples * 1000 // self.rate

    def heard_text(self, transcript: str, audio_end_ms: int) -> str:
        """The transcript cut to what `audio_end_ms` of played audio said (see the module's rule)."""
        left = audio_end_ms * self.rate // 1000
        cut = 0
        for clause in self.clauses:
            if clause.samples == 0:  # not sent yet
                break
            if left >= clause.samples:
                left -= clause.samples
                cut = clause.end
                continue
            share = left / clause.samples if clause.samples else 0.0
            partial = clause.start + int((clause.end - clause.start) * share)
            word_end = transcript.rfind(" ", clause.start, partial + 1)
            cut = partial if partial == clause.end else max(word_end, clause.start)
            break
        return transcript[:cut].rstrip()

    def truncate(self, audio_end_ms: int) -> None:
        """Keep only the first `audio_end_ms` of the clauses' audio."""
        left = audio_end_ms * self.rate // 1000
        kept: list[SpokenClause] = []
        for clause in self.clauses:
            if left <= 0:
                break
            clause.samples = min(clause.samples, left)
            left -= clause.samples
            kept.append(clause)
        self.clauses = kept


class _ClauseAudio:
    """One clause being synthesized: its PCM chunks as they come (None ends them)."""

    def __init__(self, clause: SpokenClause) -> None:
        self.clause = clause
        self.chunks: asyncio.Queue[tuple[bytes, int] | BaseException | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None


class SpeechOut:
    """Speaks one reply. feed() each LLM text delta, finish() when it ends, then await drained()."""

    def __init__(
        self,
        engine: EngineClient,
        voice: str | None,
        speed: float,
        encoding: str,
        emit: Callable[[str], None],
        reply_id: str,
    ) -> None:
        self.engine = engine
        # Every clause of the reply is sent under this request_id: the TTS lane keeps one reply's clauses
        # in order and lets concurrent replies take turns, so one long reply does not hold back the
        # first clause of another session's.
        self.reply_id = reply_id
        self.voice, self.speed, self.encoding = voice, speed, encoding
        self.emit = emit  # receives each audio delta, base64 in the output format
        self.audio = SpokenAudio(output_rate(encoding))
        self.transcript = ""
        self._segmenter = ClauseSegmenter()
        self._order: asyncio.Queue[_ClauseAudio | None] = asyncio.Queue()
        self._emitter = asyncio.create_task(self._emit_in_order())
        self.synthesis_seconds = 0.0  # engine wall time from each clause's submit to its last audio

    def feed(self, delta: str) -> None:
        self.transcript += delta
        for piece in self._segmenter.feed(delta):
            self._speak(piece)

    def finish(self) -> None:
        for piece in self._segmenter.flush():
            self._speak(piece)
        self._order.put_nowait(None)

    async def drained(self) -> None:
        """Wait until every clause's audio was emitted (raises what synthesis raised)."""
        await self._emitter

    def abort(self) -> None:
        """Stop at once: queued clauses are dropped, running ones aborted in the engine."""
        self._emitter.cancel()
        while not self._order.empty():
            entry = self._order.get_nowait()
            if entry is not None and entry.task is not None:
                entry.task.cancel()

    def _speak(self, piece: str) -> None:
        cursor = self.audio.clauses[-1].end if self.audio.clauses else 0
        start = self.transcript.find(piece, cursor)
        start = start if start >= 0 else cursor
        clause = SpokenClause(start=start, end=min(start + len(piece), len(self.transcript)))
        self.audio.clauses.append(clause)
        entry = _ClauseAudio(clause)
        entry.task = asyncio.create_task(self._synthesize(piece, entry))
        self._order.put_nowait(entry)

    async def _synthesize(self, piece: str, entry: _ClauseAudio) -> None:
        request = SpeechRequest(
            text=piece,
            voice=self.voice,
            speed=self.speed,
            priority=SpeechPriority.REALTIME,
            request_id=self.reply_id,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async for out in self.engine.synthesize(request):
                if out.pcm:
                    entry.chunks.put_nowait((out.pcm, out.sample_rate))
                if out.finished:
                    break
        except Exception as exc:
            entry.chunks.put_nowait(exc)
            return
        self.synthesis_seconds += loop.time() - started
        entry.chunks.put_nowait(None)

    async def _emit_in_order(self) -> None:
        current: _ClauseAudio | None = None
        try:
            while (current := await self._order.get()) is not None:
                await self._emit_clause(current)
        finally:
            if current is not None and current.task is not None:
                current.task.cancel()

    async def _emit_clause(self, entry: _ClauseAudio) -> None:
        resampler: soxr.ResampleStream | None = None
        while True:
            chunk = await entry.chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            last = chunk is None
            if chunk is None:
                samples = np.zeros(0, np.float32)
            else:
                pcm, rate = chunk
                samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
                if resampler is None and rate != self.audio.rate:
                    resampler = soxr.ResampleStream(rate, self.audio.rate, 1, dtype="float32")
            if resampler is not None:
                samples = resampler.resample_chunk(samples, last=last)
            if samples.size:
                entry.clause.samples += samples.size
                encoded = self._encode(samples)
                step = len(encoded) // samples.size * (self.audio.rate * DELTA_MS // 1000)
                for at in range(0, len(encoded), step):
                    self.emit(base64.b64encode(encoded[at : at + step]).decode("ascii"))
            if last:
                return

    def _encode(self, samples: np.ndarray) -> bytes:
        if self.encoding == "pcmu":
            return encode_pcmu(samples)
        if self.encoding == "pcma":
            return encode_pcma(samples)
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


async def stop(speech: SpeechOut | None) -> None:
    if speech is not None:
        speech.abort()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await speech.drained()
