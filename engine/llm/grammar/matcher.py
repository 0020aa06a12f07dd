"""One sequence's grammar state, on the inference thread."""

from __future__ import annotations

from llguidance import LLMatcher, LLTokenizer


class SequenceMatcher:
    """A copy of the compiled grammar's start state, advanced by each sampled token.

    With `start_after` (a reasoning model's "</think>") it stays dormant, unmasked, until the output
    contains that text; the grammar then applies from the next token. Text after the marker inside the
    token that completed it is fed to the grammar (leading whitespace dropped) as far as it fits."""

    def __init__(self, template: LLMatcher, tokenizer: LLTokenizer, start_after: str | None) -> None:
        self._template = template
        self._tokenizer = tokenizer
        self.matcher: LLMatcher | None = template.deep_copy() if not start_after else None
        self._marker = (start_after or "").encode()
        self._tail = b""  # dormant: the last output bytes, enough to find the marker across tokens

    @property
    def active(self) -> bool:
        return self.matcher is not None

    def advance(self, token_id: int) -> None:
        if self.matcher is not None:
            # A token the mask did not allow (the sampler's own masks contradicted it) puts the matcher in
            # its error state; masks.py then allows only EOS.
            self.matcher.consume_token(token_id)
            return
        self._tail += self._tokenizer.decode_bytes([token_id])
        at = self._tail.find(self._marker)
        if at == -1:
            self._tail = self._tail[len(self._tail) - len(self._marker) + 1 :]
            return
        rest = self._tail[at + len(self._marker) :].lstrip()
        self.matcher = self._template.deep_copy()
        if rest:
            self.matcher.try_consume_tokens(self._tokenizer.tokenize_bytes(rest))
