"""Reasoning output: a model's thinking split from its answer (`--reasoning-parser NAME`, as vLLM and SGLang).

A parser knows its model family's tags; `extract` splits a whole reply and `ReasoningStream` splits one as
it grows, holding back any ending that could still become a tag, so that a tag split across many deltas
never leaks into either part. Both treat the reply the same way: an opening tag at the start is dropped,
text before the closing tag is reasoning, and a reply with no closing tag is all reasoning (it was cut
off, or the chat template opened the thinking in the prompt). Thinking that the prompt already ended (an
assistant prefill that closed it, or a template that turned thinking off) leaves the reply all answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from http_api.tool_parsers.base import partial_suffix


@dataclass(frozen=True)
class ReasoningParser:
    name: str
    start: str = "<think>"
    end: str = "</think>"
    # chat_template_kwargs key that turns thinking off for a request when False (qwen3: enable_thinking)
    switch: str | None = None

    def thinks(self, template_kwargs: dict[str, Any] | None) -> bool:
        """Whether this request's reply starts in thinking (the template was not told to skip it)."""
        if self.switch is None or not template_kwargs:
            return True
        return template_kwargs.get(self.switch, True) is not False

    def ended_in(self, prompt_text: str) -> bool:
        """Whether the prompt already closed the thinking (its last tag is a closing one)."""
        end_at = prompt_text.rfind(self.end)
        return end_at >= 0 and end_at > prompt_text.rfind(self.start)

    def extract(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, content) of a whole reply; None for a part that is empty."""
        stream = ReasoningStream(self)
        (r1, c1), (r2, c2) = stream.feed(text), stream.finish()
        return (r1 + r2 or None), (c1 + c2 or None)


REASONING_PARSERS: dict[str, ReasoningParser] = {
    "deepseek_r1": ReasoningParser("deepseek_r1"),
    "qwen3": ReasoningParser("qwen3", switch="enable_thinking"),
}
# SGLang spells them with a hyphen
ALIASES = {"deepseek-r1": "deepseek_r1"}


def reasoning_parser(name: str) -> ReasoningParser:
    """The parser called `name`; KeyError names the known ones."""
    key = ALIASES.get(name, name)
    if key not in REASONING_PARSERS:
        known = ", ".join(sorted(REASONING_PARSERS))
        raise KeyError(f"unknown reasoning parser '{name}' (known: {known})")
    return REASONING_PARSERS[key]


@dataclass
class ReasoningStream:
    """Splits a growing reply. `feed` returns (reasoning, content) increments, either possibly "";
    `finish` returns what was held back once the reply is complete. With stream_reasoning False the
    reasoning comes out in one piece, when it ends (SGLang's option)."""

    parser: ReasoningParser
    stream_reasoning: bool = True
    text: str = ""
    _pos: int = 0  # characters of `text` already handed out
    _started: bool = False  # past a possible opening tag
    in_reasoning: bool = True
    _held_reasoning: str = ""
    reasoning_chars: int = 0  # characters of the reply that belong to the thinking, tags included

    def feed(self, delta: str) -> tuple[str, str]:
        self.text += delta
        return self._advance(final=False)

    def finish(self) -> tuple[str, str]:
        return self._advance(final=True)

    def _advance(self, final: bool) -> tuple[str, str]:
        if not self.in_reasoning:
            content = self.text[self._pos :]
            self._pos = len(self.text)
            return "", content
        if not self._started and not self._skip_start(final):
            return "", ""
        rest = self.text[self._pos :]
        end_at = rest.find(self.parser.end)
        if end_at >= 0:
            self.in_reasoning = False
            self._pos = len(self.text)
            self.reasoning_chars = len(self.text) - len(rest) + end_at + len(self.parser.end)
            return self._reasoning_out(rest[:end_at], flush=True), rest[end_at + len(self.parser.end) :]
        hold = 0 if final else partial_suffix(rest, self.parser.end)
        self._pos = len(self.text) - hold
        self.reasoning_chars = self._pos
        return self._reasoning_out(rest[: len(rest) - hold], flush=final), ""

    def _skip_start(self, final: bool) -> bool:
        """Drop an opening tag at the start; False while the start could still become one."""
        stripped = self.text.lstrip()
        tag = self.parser.start
        if stripped.startswith(tag):
            self._pos = len(self.text) - len(stripped) + len(tag)
        elif tag.startswith(stripped) and not final:
            return False
        self._started = True
        return True

    def _reasoning_out(self, piece: str, flush: bool) -> str:
        if self.stream_reasoning:
            return piece
        self._held_reasoning += piece
        if not flush:
            return ""
        out, self._held_reasoning = self._held_reasoning, ""
        return out


def reasoning_token_count(decode: Callable[[list[int]], str], token_ids: list[int], chars: int) -> int:
    """How many of the first generated tokens it took to write the first `chars` characters (the
    thinking): the fewest k whose decoded prefix is at least that long."""
    if chars <= 0:
        return 0
    low, high = 1, len(token_ids)
    while low < high:
        mid = (low + high) // 2
        if len(decode(token_ids[:mid])) >= chars:
            high = mid
        else:
            low = mid + 1
    return high
