"""Token logprobs for OpenAI's `include: ["item.input_audio_transcription.logprobs"]`.

A turn's transcript is emitted word by word from several decodes (realtime/transcriber.py), so a delta's
logprobs are those of the tokens of the latest decode that spell it: the delta's text is found in the
decode's token text at or after where the item's previous delta was found. The completed event carries
every token of the turn's final decode (for a turn longer than the decode window, its last window's).
"""

from __future__ import annotations

from engine.request import TranscriptionResult
from realtime import protocol_openai as oa


def to_wire(result: TranscriptionResult | None) -> list[oa.LogProb]:
    if result is None or not result.logprobs:
        return []
    return [oa.LogProb(token=lp.token, logprob=lp.logprob, bytes=lp.bytes) for lp in result.logprobs]


class DeltaLogprobs:
    """Per item: where in the latest decode's token text the last delta was found."""

    def __init__(self) -> None:
        self._cursor: dict[str, int] = {}

    def of(self, item_id: str, delta: str, result: TranscriptionResult | None) -> list[oa.LogProb]:
        tokens = to_wire(result)
        needle = delta.strip()
        if not tokens or not needle:
            return []
        text = "".join(t.token for t in tokens)
        start = text.find(needle, self._cursor.get(item_id, 0))
        if start < 0:
            start = text.find(needle)
        if start < 0:
            return []
        end = start + len(needle)
        self._cursor[item_id] = end
        picked: list[oa.LogProb] = []
        offset = 0
        for token in tokens:
            token_end = offset + len(token.token)
            if token_end > start and offset < end:
                picked.append(token)
            offset = token_end
        return picked

    def forget(self, item_id: str) -> None:
        self._cursor.pop(item_id, None)
