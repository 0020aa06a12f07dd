"""The input audio buffer of one session: decoding, resampling, turn detection and turn transcription.

Three ways a turn begins and ends:
  "vad"    (OpenAI server_vad)       speech start/stop found by silero-vad; partials while speaking
  "manual" (OpenAI turn_detection null) audio buffers until the client commits; one decode per turn
  "stream" (vLLM)                     commit(final=false) starts partials, commit(final=true) ends the turn
At most one decode per session is in flight. While a turn grows, the session asks the engine for a preview
(partial) decode whenever one is due and none of its own is in flight; the engine's ASR scheduler alone
decides whether it runs (a shed preview produces nothing, and the next append asks again). Each turn's
final decode waits for the previous turn's, so transcripts (and the prompts built from them) stay in order.
Results go to the TurnListener: the session's dialect, which renders them as wire events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Literal, Protocol

import numpy as np
import soxr

from audio.constants import SAMPLE_RATE
from audio.g711 import G711_SAMPLE_RATE, decode_pcma, decode_pcmu
from audio.vad import SpeechStarted, VadParams, VoiceActivityDetector
from engine.interface import EngineClient
from realtime.protocol_openai import new_id
from realtime.session import MIN_COMMIT_SECONDS, SessionConfig, StreamingSettings
from realtime.transcriber import EngineDecoder, TurnTranscriber

log = logging.getLogger(__name__)

TurnMode = Literal["vad", "manual", "stream"]
RING_SECONDS = 2.0  # audio kept before a detected speech start (covers prefix padding)


class AudioPayloadError(ValueError):
    """An append whose audio cannot be used; the session carries on without it."""


def decode_audio_payload(payload: str, encoding: str) -> np.ndarray:
    """base64 audio -> float32 samples at the encoding's own rate."""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioPayloadError(f"audio is not valid base64: {exc}") from None
    if encoding == "pcmu":
        return decode_pcmu(raw)
    if encoding == "pcma":
        return decode_pcma(raw)
    if len(raw) % 2:
        raise AudioPayloadError(f"PCM16 audio must have an even number of bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


class TurnListener(Protocol):
    """What becomes of a session's turns (implemented by each dialect)."""

    def speech_started(self, item_id: str, audio_start_ms: int) -> None: ...
    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None: ...
    def committed(self, item_id: str) -> None: ...
    def delta(self, item_id: str, text: str) -> None: ...
    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None: ...
    def transcription_failed(self, item_id: str, error: BaseException) -> None: ...
    def timeout_triggered(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> None: ...


class AudioInput:
    def __init__(
        self,
        config: SessionConfig,
        mode: TurnMode,
        listener: TurnListener,
        engine: EngineClient,
        settings: StreamingSettings,
    ) -> None:
        self.listener = listener
        self.engine = engine
        self.settings = settings
        self.config = config
        self.mode: TurnMode = mode
        self.position = 0  # 16 kHz samples received since the session began
        self._resampler: soxr.ResampleStream | None = None
        self._source_rate = SAMPLE_RATE
        self.vad: VoiceActivityDetector | None = None
        self._ring = np.zeros(0, dtype=np.float32)
        self._ring_start = 0  # absolute sample of _ring[0]
        self.turn: TurnTranscriber | None = None
        self.turn_item_id: str | None = None
        self._turn_fed_until = 0
        self._manual: list[np.ndarray] = []
        self._manual_samples = 0
        self.streaming = False  # vLLM: commit(final=false) was seen
        self._busy: asyncio.Task | None = None  # the one decode in flight (partial or final)
        self._last_preview_took_s = 0.0  # the previous turn's last preview: how busy the engine is
        self._last_final: asyncio.Task | None = None
        self.history: list[str] = []  # transcripts of earlier turns (Whisper prompt context)
        self.idle_since = 0  # server_vad idle_timeout_ms counts silence from this 16 kHz sample
        self._tasks: set[asyncio.Task] = set()
        self.apply_config(config, mode)

    # ---- configuration ----

    def apply_config(self, config: SessionConfig, mode: TurnMode) -> None:
        if mode != self.mode and self.turn is not None:
            self.end_turn()
        self.config = config
        self.mode = mode
        rate = G711_SAMPLE_RATE if config.encoding in ("pcmu", "pcma") else config.input_rate
        if rate != self._source_rate:
            self._source_rate = rate
            self._resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1)
        if mode == "vad":
            params = config.vad or VadParams()
            if self.vad is None:
                self.vad = VoiceActivityDetector(params)
                self.vad.position = self.position
            else:
                self.vad.params = params
        else:
            self.vad = None

    # ---- input ----

    def to_samples(self, payload: str) -> np.ndarray:
        """Decode and resample one append's audio to 16 kHz (raises AudioPayloadError)."""
        audio = decode_audio_payload(payload, self.config.encoding)
        if self._resampler is not None and len(audio):
            audio = self._resampler.resample_chunk(audio)
        return audio.astype(np.float32, copy=False)

    def append(self, samples: np.ndarray) -> None:
        if not len(samples):
            return
        start = self.position
        self.position += len(samples)
        if self.mode == "manual":
            self._manual.append(samples)
            self._manual_samples += len(samples)
        elif self.mode == "stream":
            if self.turn is None:
                self._start_turn(new_id("item"))
            self.turn.append(samples)
            if self.streaming:
                self._maybe_partial()
        else:
            self._append_vad(samples, start)

    def _append_vad(self, samples: np.ndarray, start: int) -> None:
        assert self.vad is not None
        self._ring = np.concatenate([self._ring, samples]) if len(self._ring) else samples.copy()
        self._ring_start = self.position - len(self._ring)
        for event in self.vad.feed(samples):
            if isinstance(event, SpeechStarted):
                if self.turn is not None:  # a manual commit cut the previous turn mid-speech
                    continue
                item_id = new_id("item")
                self._start_turn(item_id)
                self._turn_fed_until = max(event.sample, self._ring_start)
                self.listener.speech_started(item_id, event.sample * 1000 // SAMPLE_RATE)
            elif self.turn is not None:
                self._feed_turn(min(event.sample, self.position))
                self.listener.speech_stopped(self.turn_item_id or "", event.sample * 1000 // SAMPLE_RATE)
                self.end_turn()
                self.idle_since = event.sample
        if self.turn is not None:
            self._feed_turn(self.position)
            self._maybe_partial()
        elif self._idle_timed_out():
            self._commit_idle()
        keep_from = self.position - int(RING_SECONDS * SAMPLE_RATE)
        if self._ring_start < keep_from:
            self._ring = self._ring[keep_from - self._ring_start :]
            self._ring_start = keep_from

    def restart_idle(self) -> None:
        """The idle timeout counts from now (a response is playing, or just ended)."""
        self.idle_since = self.position

    def _idle_timed_out(self) -> bool:
        timeout_ms = self.config.idle_timeout_ms
        if timeout_ms is None or self.turn is not None or (self.vad is not None and self.vad.speaking):
            return False
        return self.position - self.idle_since >= timeout_ms * SAMPLE_RATE // 1000

    def _commit_idle(self) -> None:
        """server_vad's idle timeout: the silence is committed as a turn (its last RING_SECONDS, which is
        all Whisper needs to hear that nothing was said), like OpenAI's input_audio_buffer.timeout_triggered."""
        item_id = new_id("item")
        start_ms, end_ms = self.idle_since * 1000 // SAMPLE_RATE, self.position * 1000 // SAMPLE_RATE
        self.listener.timeout_triggered(item_id, start_ms, end_ms)
        self._start_turn(item_id)
        self._turn_fed_until = max(self.idle_since, self._ring_start)
        self._feed_turn(self.position)
        self.end_turn()
        self.idle_since = self.position

    def _feed_turn(self, until: int) -> None:
        if self.turn is None or until <= self._turn_fed_until:
            return
        lo = self._turn_fed_until - self._ring_start
        self.turn.append(self._ring[max(lo, 0) : until - self._ring_start].copy())
        self._turn_fed_until = until

    # ---- turns ----

    def _context(self) -> str:
        parts = [self.config.prompt or "", *self.history[-4:]]
        return " ".join(p for p in parts if p)

    def _start_turn(self, item_id: str) -> None:
        config = self.config
        decoder = EngineDecoder(self.engine, config.asr_model, config.language, self.settings, item_id)
        busy = self._last_preview_took_s > self.settings.busy_preview_s
        self.turn = TurnTranscriber(decoder, self.settings, self._context(), engine_busy=busy)
        self.turn_item_id = item_id

    def _maybe_partial(self) -> None:
        """Ask for a preview decode when the turn is due for one and no decode of ours is in flight."""
        turn = self.turn
        if turn is None or not turn.due_for_partial():
            return
        if self._busy is not None and not self._busy.done():
            return
        self._busy = self._spawn(self._run_partial(turn, self.turn_item_id or ""))

    async def _run_partial(self, turn: TurnTranscriber, item_id: str) -> None:
        try:
            out = await turn.partial()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("partial decode failed (the final decode will retry)")
            return
        if out.delta:
            self.listener.delta(item_id, out.delta)

    def end_turn(self) -> asyncio.Task | None:
        """Close the current turn (it is committed) and finalize it in the background."""
        turn, item_id = self.turn, self.turn_item_id
        self.turn, self.turn_item_id = None, None
        if turn is None or item_id is None:
            return None
        self._last_preview_took_s = turn.last_preview_took_s
        self.listener.committed(item_id)
        task = self._spawn(self._finalize(turn, item_id, self._busy, self._last_final))
        self._busy = self._last_final = task
        return task

    async def _finalize(
        self, turn: TurnTranscriber, item_id: str, partial: asyncio.Task | None, previous: asyncio.Task | None
    ) -> None:
        if partial is not None and partial is not previous:
            partial.cancel()  # its words would be re-decoded by the final decode anyway
        pending = {t for t in (partial, previous) if t is not None and not t.done()}
        if pending:
            await asyncio.wait(pending)  # never raises their errors; our own cancellation still propagates
        try:
            out = await turn.final()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("transcription failed")
            self.listener.transcription_failed(item_id, exc)
            return
        if out.delta:
            self.listener.delta(item_id, out.delta)
        if out.transcript:
            self.history.append(out.transcript)
        self.listener.transcribed(item_id, out.transcript, turn)

    def commit(self) -> str | None:
        """Client commit (OpenAI). Returns an error message when there is too little audio."""
        if self.mode == "manual":
            if self._manual_samples < MIN_COMMIT_SECONDS * SAMPLE_RATE:
                return self._too_little(self._manual_samples)
            item_id = new_id("item")
            self._start_turn(item_id)
            assert self.turn is not None
            for chunk in self._manual:
                self.turn.append(chunk)
            self._manual, self._manual_samples = [], 0
            self.end_turn()
            return None
        if self.turn is None or self.turn.total_samples < MIN_COMMIT_SECONDS * SAMPLE_RATE:
            return self._too_little(self.turn.total_samples if self.turn else 0)
        self._feed_turn(self.position)
        self.end_turn()
        return None

    @staticmethod
    def _too_little(samples: int) -> str:
        return (
            f"Error committing input audio buffer: buffer too small. Expected at least "
            f"{int(MIN_COMMIT_SECONDS * 1000)}ms of audio, but buffer only has {samples * 1000 // SAMPLE_RATE}ms."
        )

    def clear(self) -> None:
        """Drop uncommitted audio (and the turn in progress, whose partial decode is aborted)."""
        self._manual, self._manual_samples = [], 0
        if self.turn is not None:
            if self._busy is not None and self._busy is not self._last_final:
                self._busy.cancel()
            self.turn, self.turn_item_id = None, None
        if self.vad is not None:
            self.vad.reset()
            self.vad.position = self.position

    def start_stream(self) -> None:
        """vLLM commit(final=false): transcribe the turn as it streams in."""
        self.streaming = True
        if self.turn is None:
            self._start_turn(new_id("item"))
        self._maybe_partial()

    def finish_stream(self) -> str | None:
        """vLLM commit(final=true): end the turn. Returns an error message for too little audio."""
        if self.turn is None or self.turn.total_samples < MIN_COMMIT_SECONDS * SAMPLE_RATE:
            samples = self.turn.total_samples if self.turn else 0
            self.turn, self.turn_item_id = None, None
            return self._too_little(samples)
        self.end_turn()
        return None

    def buffered_seconds(self) -> float:
        turn = self.turn.window_seconds if self.turn is not None else 0.0
        return turn + self._manual_samples / SAMPLE_RATE

    def has_pending_speech(self) -> bool:
        return self.turn is not None and self.turn.total_samples >= MIN_COMMIT_SECONDS * SAMPLE_RATE

    async def flush(self) -> None:
        """End the turn in progress and wait until every transcript has been emitted."""
        if self.mode == "manual" and self._manual_samples >= MIN_COMMIT_SECONDS * SAMPLE_RATE:
            self.commit()
        elif self.has_pending_speech():
            if self.mode == "vad":
                self._feed_turn(self.position)
            self.end_turn()
        await self.wait_transcribed()

    async def wait_transcribed(self) -> None:
        """Wait for the finals already started (a response needs the user's words)."""
        if self._last_final is not None and not self._last_final.done():
            await asyncio.wait({self._last_final})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel every decode (aborting its engine request)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
