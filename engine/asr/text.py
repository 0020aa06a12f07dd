"""Tokens to text: a row's running text, its segments (with timestamps or not), and its outputs,
and Whisper's rule for windows that hold no speech."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from transformers.convert_slow_tokenizer import bytes_to_unicode

from engine.asr.job import TIME_PRECISION, WhisperRowOutput, WhisperSegment
from engine.request import TranscriptionLogprob

if TYPE_CHECKING:
    from transformers import WhisperTokenizer

    from engine.asr.batch import DecodeRow

# OpenAI Whisper's rule and defaults: a window is silent when <|nospeech|> is likely after
# <|startoftranscript|> and the decoded text is unsure of itself.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# ...or when <|nospeech|> is all but certain: tiny.en and base read 20 s of zeros as " you" with an
# average logprob of -0.4 to -0.8, at P(nospeech) 0.92-0.99. Speech stays far below: at most 0.52
# (tiny.en) and 0.38 (base) over the test clips and one-word utterances, whole, halved, padded with
# 15 s of silence and at 1/20 volume, in full and trimmed context.
CERTAIN_NO_SPEECH = 0.9


def is_silent(no_speech_prob: float, avg_logprob: float) -> bool:
    if no_speech_prob > CERTAIN_NO_SPEECH:
        return True
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length: high for repetitive text (Whisper's loop signal)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def avg_logprob(row: DecodeRow) -> float:
    """The mean log-probability of the row's chosen tokens, its EOT counted (as OpenAI Whisper does)."""
    return (sum(row.logprobs) + row.eot_logprob) / (len(row.tokens) + 1)


class WhisperText:
    """Detokenizes one model's rows. Text tokens are the ids below EOT; timestamps are from
    `timestamp_begin` up."""

    def __init__(self, tokenizer: WhisperTokenizer, eot_id: int, timestamp_begin: int) -> None:
        self.tokenizer = tokenizer
        self.eot_id = eot_id
        self.timestamp_begin = timestamp_begin
        # Byte-level BPE: each character of a token's string stands for one byte.
        self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

    def text_tokens(self, tokens: list[int]) -> list[int]:
        eot = self.eot_id
        return [t for t in tokens if t < eot]

    def truncate_text_tokens(self, row: DecodeRow, keep_text: int) -> None:
        """Cut the row's tokens right before its text token number `keep_text`."""
        eot = self.eot_id
        seen = 0
        for pos, token in enumerate(row.tokens):
            if token < eot:
                if seen == keep_text:
                    del row.tokens[pos:]
                    del row.logprobs[pos:]
                    return
                seen += 1

    def token_logprobs(self, row: DecodeRow) -> list[TranscriptionLogprob]:
        """The row's text tokens, each with the log-probability it was chosen with."""
        pairs = [(t, lp) for t, lp in zip(row.tokens, row.logprobs, strict=True) if t < self.eot_id]
        pieces = self.tokenizer.convert_ids_to_tokens([t for t, _ in pairs])
        out = []
        for piece, (_, logprob) in zip(pieces, pairs, strict=True):
            raw = bytes(self._byte_of[c] for c in piece if c in self._byte_of)
            out.append(TranscriptionLogprob(raw.decode("utf-8", errors="replace"), logprob, list(raw)))
        return out

    def update_text(self, row: DecodeRow) -> None:
        # Whisper's leading space is kept: the caller joins windows' texts with "".
        text = self.tokenizer.decode(self.text_tokens(row.tokens))
        # A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
        if not text.endswith("\ufffd") or row.finished:
            row.text = text.replace("\ufffd", "") if row.finished else text

    def segments(self, row: DecodeRow) -> list[WhisperSegment]:
        if not row.job.with_timestamps:
            text = row.text.strip()
            return [
                WhisperSegment(0.0, row.duration, text, self.text_tokens(row.tokens), compression_ratio(text))
            ]
        segments: list[WhisperSegment] = []
        start: float | None = None
        last_end = 0.0
        text_tokens: list[int] = []

        def close(end: float) -> None:
            text = self.tokenizer.decode(text_tokens).strip()
            if text:
                first = start if start is not None else last_end
                segments.append(WhisperSegment(first, end, text, list(text_tokens), compression_ratio(text)))
            text_tokens.clear()

        for token in row.tokens:
            if token < self.eot_id:
                text_tokens.append(token)
                continue
            # The model may stamp the end of speech a little past the end of the audio.
            time = min((token - self.timestamp_begin) * TIME_PRECISION, row.duration)
            if start is not None and text_tokens:
                close(time)
                last_end, start = time, None
            else:
                start = time
        if text_tokens:
            close(row.duration)
        return segments

    def finish(self, row: DecodeRow) -> None:
        """The row is finished: its final text, segments, confidence and draft counts. A window judged
        silent keeps no text: what Whisper makes of silence ("you") is not speech."""
        self.update_text(row)
        logprob = avg_logprob(row)
        silent = is_silent(row.no_speech_prob, logprob)
        row.output = WhisperRowOutput(
            text="" if silent else row.text,
            finished=True,
            language=row.language,
            num_tokens=len(row.tokens),
            segments=[] if silent else self.segments(row),
            draft_tokens=len(row.draft),
            draft_accepted=row.draft_accepted,
            avg_logprob=logprob,
            no_speech_prob=row.no_speech_prob,
            no_speech=silent,
            logprobs=[] if silent else self.token_logprobs(row),
        )

    def output(self, row: DecodeRow) -> WhisperRowOutput:
        if row.finished and row.output is not None:
            return row.output
        # Text that may yet be judged silent is held back until the row finishes.
        held = row.no_speech_prob > NO_SPEECH_THRESHOLD
        return WhisperRowOutput(
            text="" if held else row.text,
            finished=row.finished,
            language=row.language,
            num_tokens=len(row.tokens),
        )
