"""Tokens to text: a row's running text, its segments (with timestamps or not), and its outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.asr.job import TIME_PRECISION, WhisperRowOutput, WhisperSegment

if TYPE_CHECKING:
    from transformers import WhisperTokenizer

    from engine.asr.batch import DecodeRow


class WhisperText:
    """Detokenizes one model's rows. Text tokens are the ids below EOT; timestamps are from
    `timestamp_begin` up."""

    def __init__(self, tokenizer: WhisperTokenizer, eot_id: int, timestamp_begin: int) -> None:
        self.tokenizer = tokenizer
        self.eot_id = eot_id
        self.timestamp_begin = timestamp_begin

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
                    return
                seen += 1

    def update_text(self, row: DecodeRow) -> None:
        # Whisper's leading space is kept: the caller joins windows' texts with "".
        text = self.tokenizer.decode(self.text_tokens(row.tokens))
        # A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
        if not text.endswith("\ufffd") or row.finished:
            row.text = text.replace("\ufffd", "") if row.finished else text

    def segments(self, row: DecodeRow) -> list[WhisperSegment]:
        if not row.job.with_timestamps:
            return [WhisperSegment(0.0, row.duration, row.text.strip(), self.text_tokens(row.tokens))]
        segments: list[WhisperSegment] = []
        start: float | None = None
        last_end = 0.0
        text_tokens: list[int] = []

        def close(end: float) -> None:
            text = self.tokenizer.decode(text_tokens).strip()
            if text:
                segments.append(
                    WhisperSegment(start if start is not None else last_end, end, text, list(text_tokens))
                )
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
        """The row is finished: its final text, segments and draft counts."""
        self.update_text(row)
        row.output = WhisperRowOutput(
            text=row.text,
            finished=True,
            language=row.language,
            num_tokens=len(row.tokens),
            segments=self.segments(row),
            draft_tokens=len(row.draft),
            draft_accepted=row.draft_accepted,
        )

    def output(self, row: DecodeRow) -> WhisperRowOutput:
        if row.finished and row.output is not None:
            return row.output
        return WhisperRowOutput(
            text=row.text, finished=row.finished, language=row.language, num_tokens=len(row.tokens)
        )
