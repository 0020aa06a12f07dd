"""Hermes / Qwen calls: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the text, as the
embedded SmolLM2's tool template (engine/models/chat_templates/smollm2_tools.jinja) and Qwen2.5 ask."""

from __future__ import annotations

import json
import re

from http_api.tool_parsers.base import ParsedCall, call_from_object, partial_suffix
from http_api.tool_parsers.forced import CallNotation

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)


class HermesToolParser:
    name = "hermes"
    notation = CallNotation(open=OPEN + "\n", close="\n" + CLOSE, separator="\n", arguments_key="arguments")

    def extract(self, text: str, names: set[str]) -> tuple[str, list[ParsedCall]]:
        calls: list[ParsedCall] = []
        kept: list[str] = []
        pos = 0
        for match in _CALL.finditer(text):
            try:
                call = call_from_object(json.loads(match.group(1)), names)
            except json.JSONDecodeError:
                call = None
            if call is None:
                continue
            kept.append(text[pos : match.start()])
            calls.append(call)
            pos = match.end()
        kept.append(text[pos:])
        rest = "".join(kept)
        return (rest if not calls or rest.strip() else ""), calls

    def content_prefix_len(self, text: str) -> int:
        start = text.find(OPEN)
        return start if start >= 0 else len(text) - partial_suffix(text, OPEN)
