"""Streaming transcription of one turn: re-decode the growing audio, emit only what two hypotheses agree on
(or what one is sure of).

LocalAgreement-2 at word level: a word is emitted once two successive hypotheses agree on it and on
every word before it. With the "live" policy a word is also emitted one hypothesis early when Whisper
chose each of its tokens with a high log-probability (`StreamingSettings.confident_logprob`). Emitted text
is never retracted; the final decode only appends the rest, so the concatenated deltas always equal the
final transcript. Past `max_window_s` the window slides: the text
of complete Whisper segments is committed and their audio dropped, so a turn can go on for minutes.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from audio.constants import SAMPLE_RATE
from engine.interface import EngineClient
from engine.request import Priority, TranscriptionRequest, TranscriptionResult
from realtime.session import StreamingSettings

# (audio, prompt, with_timestamps, preview, draft) -> result, or None for a preview the engine's ASR
# scheduler shed (no partial this time). Cancelling the awaitable aborts the engine request. draft is
# the previous hypothesis's tokens, which the engine verifies in one pass instead of decoding them again.
DecodeFn = Callable[
    [np.ndarray, str | None, bool, bool, list[int] | None], Awaitable[TranscriptionResult | None]
]

_PUNCT = re.compile(r"[^\w']+")
log = logging.getLogger(__name__)


class EngineDecoder:
    """The DecodeFn of one session's turns: each decode is one TranscriptionRequest to the engine.

    A preview asks for a PREVIEW decode; whether (and when) it runs is the ASR scheduler's call."""

    def __init__(
        self,
        engine: EngineClient,
        model: str,
        language: str | None,
        settings: StreamingSettings,
        live_stream: str | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.language = language
        self.settings = settings
        self.live_stream = live_stream  # the turn's id, for the ASR scheduler's preview order

    async def __call__(
        self,
        audio: np.ndarray,
        prompt: str | None,
        with_timestamps: bool,
        preview: bool,
        draft: list[int] | None,
    ) -> TranscriptionResult | None:
        settings = self.settings
        request = TranscriptionRequest(
            audio=audio,
            model=self.model,
            language=self.language,
            prompt=prompt,
            priority=Priority.PREVIEW if preview else Priority.REALTIME,
            encoder_context="trimmed",
            min_context_s=settings.partial_min_encoder_context_s
            if preview
            else settings.min_encoder_context_s,
            with_timestamps=with_timestamps,
            draft_tokens=draft,
            live_stream=self.live_stream,
        )
        result, skipped = None, False
        async for out in self.engine.transcribe(request):  # read to the end: leaving early aborts it
            result = out.result if out.result is not None else result
            skipped = skipped or out.skipped
        if result is None and not skipped:
            raise RuntimeError("the engine ended the transcription without a result")
        return result


def hypothesis_words(result: TranscriptionResult) -> list[str]:
    """The decoded words. Segments are preferred: they are cut after repetition loops are removed."""
    text = " ".join(seg.text for seg in result.segments) if result.segments else result.text
    return text.split()


def hypothesis_tokens(result: TranscriptionResult) -> list[int] | None:
    """A decode's text tokens, as the draft for the next decode of the same (grown) audio."""
    tokens = [t for seg in result.segments for t in seg.tokens]
    return tokens or None


def word_logprobs(result: TranscriptionResult) -> list[float] | None:
    """Per word of the result's text: the lowest log-probability among its tokens (None: unknown).

    A token that starts with a space starts a word; the others (punctuation, word pieces) extend it."""
    if not result.logprobs:
        return None
    words: list[float] = []
    for entry in result.logprobs:
        if not entry.token.strip():
            continue
        if entry.token[0].isspace() or not words:
            words.append(entry.logprob)
        else:
            words[-1] = min(words[-1], entry.logprob)
    return words


def normalize_word(word: str) -> str:
    return _PUNCT.sub("", word.lower())


def join_words(words: list[str]) -> str:
    return " ".join(words)


class LocalAgreement:
    """Word-level LocalAgreement-2 over the hypotheses of one audio window.

    When previews come a fraction of a second apart, two may end on the same word cut short by the
    edge of the audio ("quit" for "quick"), and an emitted word cannot be taken back. So with
    `hold_back` the last words of either hypothesis never count as agreed, and with `min_gap` a
    hypothesis is compared with the newest one made on at least that much less audio (samples)."""

    def __init__(self, hold_back: int = 0, min_gap: int = 0) -> None:
        self.committed: list[str] = []  # words of this window already emitted
        self.previous: list[str] | None = None
        self.hold_back = hold_back
        self.min_gap = min_gap
        self._earlier: list[tuple[int, list[str]]] = []  # (audio samples, hypothesis), oldest first

    def update(self, hypothesis: list[str], at: int = 0) -> list[str]:
        """Feed a new hypothesis made on `at` samples of audio; return the words that became stable."""
        if self.min_gap:
            older = [h for n, h in self._earlier if n <= at - self.min_gap]
            if older:
                self.previous = older[-1]
            elif self._earlier:
                self.previous = None
            self._earlier = [(n, h) for n, h in self._earlier if n > at - 2 * self.min_gap] + [
                (at, hypothesis)
            ]
        new: list[str] = []
        if self.previous is not None:
            agreed = 0
            for a, b in zip(self.previous, hypothesis, strict=False):
                if a != b:
                    break
                agreed += 1
            agreed = min(agreed, len(self.previous) - self.hold_back, len(hypothesis) - self.hold_back)
            if agreed > len(self.committed):
                new = hypothesis[len(self.committed) : agreed]
                self.committed.extend(new)
        self.previous = hypothesis
        return new

    def rest(self, final: list[str]) -> list[str]:
        """The words of the final hypothesis that come after what was already committed.

        The final decode may word the committed part slightly differently; align on normalized words
        and continue after the last committed word the final hypothesis also contains.
        """
        if not self.committed:
            return list(final)
        if final[: len(self.committed)] == self.committed:
            return final[len(self.committed) :]
        a = [normalize_word(w) for w in self.committed]
        b = [normalize_word(w) for w in final]
        blocks = [
            m for m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks() if m.size
        ]
        if not blocks:
            return final[len(self.committed) :]
        last = blocks[-1]
        unmatched_tail = len(a) - (last.a + last.size)
        return final[min(len(b), last.b + last.size + unmatched_tail) :]


@dataclass
class TurnOutput:
    delta: str  # text to send now ("" for none)
    transcript: str  # everything emitted for the turn so far


class TurnTranscriber:
    """One turn of speech. Not thread-safe; driven from one asyncio task at a time per turn."""

    def __init__(
        self, decode: DecodeFn, settings: StreamingSettings, context: str = "", engine_busy: bool = False
    ) -> None:
        self.decode = decode
        self.settings = settings
        self.context = context  # text before this turn (prompt)
        # The session's previous turn found the engine busy: the first preview waits for more audio.
        self.engine_busy = engine_busy
        self._chunks: list[np.ndarray] = []
        self._audio = np.zeros(0, dtype=np.float32)
        self.window_start = 0  # absolute sample (within the turn) where the decode window begins
        self.total_samples = 0
        self._last_partial_at = 0  # total_samples when the last partial decode was launched
        self._partial_took_s = 0.0  # the last preview's decode time: engine load, as the turn sees it
        self._partial_fastest_s = float("inf")  # the turn's fastest preview: about its own compute
        self.agreement = self._new_agreement()
        self.words: list[str] = []  # every word emitted for this turn
        self.slid_words: list[str] = []  # words whose audio slid out of the window
        self.decoded_tokens = 0
        self.last_result: TranscriptionResult | None = None  # the latest decode (its token logprobs)
        self._draft: list[int] | None = None  # the last decode of this window, for the next one
        self._confident: set[int] = set()  # indices (in agreement.committed) of words emitted early
        self.confident_words = 0  # words emitted early over the turn
        self.confident_contradicted = 0  # of those, words the final decode says differently

    # ---- audio ----

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.total_samples += len(samples)

    def window_audio(self) -> np.ndarray:
        if self._chunks:
            self._audio = np.concatenate([self._audio, *self._chunks])
            self._chunks.clear()
        return self._audio

    @property
    def last_preview_took_s(self) -> float:
        """How long the turn's last preview took to come back (0: none ran)."""
        return self._partial_took_s

    def _new_agreement(self) -> LocalAgreement:
        if self.settings.policy != "live":
            return LocalAgreement()
        gap = int(self.settings.agreement_min_gap_s * SAMPLE_RATE)  # live previews come close together
        return LocalAgreement(hold_back=1, min_gap=gap)

    @property
    def window_seconds(self) -> float:
        return (self.total_samples - self.window_start) / SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.total_samples / SAMPLE_RATE

    def due_for_partial(self) -> bool:
        s = self.settings
        if s.policy == "live":
            if self._last_partial_at == 0:
                first = s.min_partial_audio_s if self.engine_busy else s.first_partial_audio_s
                return self.window_seconds >= first
            waited = self._partial_took_s - self._partial_fastest_s  # queueing: other sessions' work
            interval = max(
                s.min_partial_interval_s,
                s.busy_interval_factor * waited,
                s.decode_interval_factor * self._partial_took_s,
            )
            return self.total_samples - self._last_partial_at >= interval * SAMPLE_RATE
        return (
            self.window_seconds >= s.min_partial_audio_s
            and self.total_samples - self._last_partial_at >= s.partial_interval_s * SAMPLE_RATE
        )

    # ---- text ----

    def _prompt(self) -> str | None:
        text = " ".join(t for t in (self.context, join_words(self.slid_words)) if t).strip()
        return text[-self.settings.prompt_chars :] or None

    def _emit(self, words: list[str]) -> str:
        if not words:
            return ""
        delta = (" " if self.words else "") + join_words(words)
        self.words.extend(words)
        return delta

    @property
    def transcript(self) -> str:
        return join_words(self.words)

    # ---- decodes ----

    async def partial(self) -> TurnOutput:
        """Re-decode the window; emit the newly agreed words (cancel-safe: no state changes until decoded).

        A preview the engine shed produces nothing, and the turn is due again on its next append."""
        launched_after = self._last_partial_at
        self._last_partial_at = self.total_samples
        audio = self.window_audio()
        window_start = self.window_start
        slide = len(audio) >= self.settings.max_window_s * SAMPLE_RATE
        began = time.monotonic()
        result = await self.decode(audio, self._prompt(), slide, True, None if slide else self._draft)
        if result is None:
            self._last_partial_at = launched_after
            return TurnOutput("", self.transcript)
        self._partial_took_s = time.monotonic() - began
        self._partial_fastest_s = min(self._partial_fastest_s, self._partial_took_s)
        self.decoded_tokens += result.tokens
        self.last_result = result
        if window_start != self.window_start:
            return TurnOutput("", self.transcript)  # the window moved while we decoded: stale
        self._draft = None if slide else hypothesis_tokens(result)
        hypothesis = hypothesis_words(result)
        new = self.agreement.update(hypothesis, self.total_samples)
        if self.settings.policy == "live" and not slide:
            new += self._confident_words(result, hypothesis)
        delta = self._emit(new)
        if slide:
            delta += self._slide(result, hypothesis, len(audio))
        return TurnOutput(delta, self.transcript)

    def _confident_words(self, result: TranscriptionResult, hypothesis: list[str]) -> list[str]:
        """Commit the words past the agreed prefix that Whisper is sure of (all but the last few)."""
        scores = word_logprobs(result)
        committed = self.agreement.committed
        if scores is None or len(scores) != len(hypothesis) or hypothesis[: len(committed)] != committed:
            return []
        s = self.settings
        sure: list[str] = []
        for i in range(len(committed), len(hypothesis) - s.confident_hold_back):
            if scores[i] < s.confident_logprob:
                break
            sure.append(hypothesis[i])
            self._confident.add(i)
        committed.extend(sure)
        self.confident_words += len(sure)
        return sure

    def _count_contradicted(self, final: list[str]) -> None:
        """How many early words the final decode, made on its own, would have said differently."""
        committed = self.agreement.committed
        for i in self._confident:
            if i >= len(final) or normalize_word(final[i]) != normalize_word(committed[i]):
                self.confident_contradicted += 1
        if self.confident_words:
            log.debug(
                "turn: %d words emitted early, %d contradicted by the final decode",
                self.confident_words,
                self.confident_contradicted,
            )

    async def final(self) -> TurnOutput:
        """Decode the whole window once more and emit the rest of the turn."""
        audio = self.window_audio()
        if len(audio) == 0:
            return TurnOutput("", self.transcript)
        result = await self.decode(audio, self._prompt(), False, False, self._draft)
        if result is None:  # only previews are ever shed
            raise RuntimeError("the engine skipped an end-of-turn decode")
        self.decoded_tokens += result.tokens
        self.last_result = result
        final_words = hypothesis_words(result)
        self._count_contradicted(final_words)
        delta = self._emit(self.agreement.rest(final_words))
        return TurnOutput(delta, self.transcript)

    def _slide(self, result: TranscriptionResult, hypothesis: list[str], window_len: int) -> str:
        """Commit the words of every complete segment but the last, and drop their audio."""
        counts = [len(seg.text.split()) for seg in result.segments]
        cut_words, cut_time = 0, 0.0
        if sum(counts) == len(hypothesis) and len(result.segments) > 1:
            for seg, n in zip(result.segments[:-1], counts[:-1], strict=True):
                if seg.end <= window_len / SAMPLE_RATE - 0.5:
                    cut_words += n
                    cut_time = seg.end
        if cut_time < 1.0:
            if window_len < (self.settings.max_window_s + 4.0) * SAMPLE_RATE:
                return ""  # wait for a segment boundary a little longer
            cut_words, cut_time = len(hypothesis), window_len / SAMPLE_RATE  # no boundary: cut all
        committed = self.agreement.committed
        delta = self._emit(hypothesis[len(committed) : cut_words]) if cut_words > len(committed) else ""
        carried = committed[cut_words:]  # emitted words whose audio stays in the window
        self.slid_words.extend(hypothesis[:cut_words])
        cut = int(cut_time * SAMPLE_RATE)
        self._audio = self._audio[cut:]
        self.window_start += cut
        self.agreement = self._new_agreement()
        self._confident = set()  # the window's indices start over (its early words were checked by then)
        self.agreement.committed = list(carried)
        self.agreement.previous = hypothesis[cut_words:]
        return delta
