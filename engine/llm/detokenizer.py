"""Incremental detokenization with stop strings, one instance per sequence.

Text is released only once it can no longer turn out to be the start of a stop string,
and never while the last token ends in an incomplete UTF-8 character.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IncrementalDetokenizer:
    tokenizer: object
    stop: list[str]
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    token_ids: list[int] = field(default_factory=list)
    text: str = ""  # all decoded text so far (stop string cut once matched)
    released: int = 0  # characters of `text` already handed out
    _prefix_offset: int = 0
    _read_offset: int = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int, check_stop: bool = True) -> str | None:
        """Append a token; return the stop string it completed, if any (none while not check_stop)."""
        self.token_ids.append(token_id)
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return None
        search_from = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        self.text += new_text[len(prefix_text) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.token_ids)
        for stop in self.stop if check_stop else ():
            at = self.text.find(stop, search_from)
            if at != -1:
                self.text = self.text[: at + len(stop)] if self.include_stop_str_in_output else self.text[:at]
                return stop
        return None

    def _possible_stop_prefix(self) -> int:
        """Length of the longest tail of `text` that a stop string could still complete."""
        longest = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:k]):
                    longest = k
                    break
        return longest

    def release(self, finished: bool) -> str:
        """Text that is safe to hand out now."""
        end = len(self.text)
        if not finished:
            end -= self._possible_stop_prefix()
        if end <= self.released:
            return ""
        delta = self.text[self.released : end]
        self.released = end
        return delta
