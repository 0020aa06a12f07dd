"""What every tool-call parser shares: the parsed call, the parser protocol, and reading a call object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from http_api.tool_parsers.forced import CallNotation


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text


class ToolParser(Protocol):
    """Finds a model family's tool calls in its text (`--tool-call-parser NAME`)."""

    name: str
    notation: CallNotation  # how forced calls are written (tool_choice "required" or named)

    def extract(self, text: str, names: set[str]) -> tuple[str, list[ParsedCall]]:
        """(the text with every well-formed call to a known function cut out, those calls). Text before
        the first call is kept exactly, so whatever was streamed of it stays a prefix of the result; when
        calls were found and nothing but whitespace is left, the text is ""."""
        ...

    def content_prefix_len(self, text: str) -> int:
        """How much of a growing reply is surely text, not part of a call: it may be streamed now."""
        ...


def call_from_object(obj: Any, names: set[str]) -> ParsedCall | None:
    """{"name": ..., "arguments" (or "parameters"): {...} or its JSON text} naming a known function, as a
    call; None for anything else."""
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


def partial_suffix(text: str, tag: str) -> int:
    """How many characters at the end of `text` could still grow into `tag`."""
    for keep in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:keep]):
            return keep
    return 0
