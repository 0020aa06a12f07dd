"""Llama 3.x JSON calls: the whole reply is `{"name": ..., "parameters": {...}}` (several joined by `;`),
optionally after `<|python_tag|>`, as Llama 3.1-3.3's own chat template asks for."""

from __future__ import annotations

import json

from http_api.tool_parsers.base import ParsedCall, call_from_object
from http_api.tool_parsers.forced import CallNotation

PYTHON_TAG = "<|python_tag|>"
_decoder = json.JSONDecoder()


class Llama3JsonToolParser:
    name = "llama3_json"
    notation = CallNotation(open="", close="", separator="; ", arguments_key="parameters")

    def extract(self, text: str, names: set[str]) -> tuple[str, list[ParsedCall]]:
        body = text.strip().removeprefix(PYTHON_TAG).strip()
        if not body.startswith("{"):
            return text, []
        calls: list[ParsedCall] = []
        pos = 0
        while pos < len(body):
            try:
                obj, end = _decoder.raw_decode(body, pos)
            except json.JSONDecodeError:
                return text, []
            call = call_from_object(obj, names)
            if call is None:
                return text, []
            calls.append(call)
            pos = end
            while pos < len(body) and body[pos] in "; \t\r\n":
                pos += 1
        return "", calls

    def content_prefix_len(self, text: str) -> int:
        stripped = text.lstrip()
        if not stripped or stripped.startswith(("{", PYTHON_TAG)) or PYTHON_TAG.startswith(stripped):
            return 0  # may be a call: held until the reply is complete
        return len(text)
