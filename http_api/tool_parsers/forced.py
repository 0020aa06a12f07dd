"""Forced tool calls (tool_choice "required" or a named function): the grammar that makes the model write
them, and reading what it wrote as it grows.

The model is made to write its calls in its own family's notation (the --tool-call-parser's: Hermes
`<tool_call>` tags by default, Llama 3 JSON), each call an object `{"name": ..., "arguments": {...}}` whose
arguments follow the function's `parameters` schema, so they always validate. A named tool_choice allows
that one function; "required" any of them, one call or (parallel_tool_calls) several.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.structured_output import StructuredOutput

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
ARGUMENT_KEYS = ("arguments", "parameters")
# llguidance's JSON options: one line, spaced as the chat template writes calls (fewer tokens than the
# indented JSON the model drifts into otherwise)
COMPACT_JSON = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


@dataclass(frozen=True)
class CallNotation:
    """How a model family writes one call around its JSON object, and between calls."""

    open: str
    close: str
    separator: str
    arguments_key: str


def _lark_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lark one


def _call_schema(name: str, parameters: dict[str, Any] | None, arguments_key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, arguments_key: parameters or EMPTY_PARAMETERS},
        "required": ["name", arguments_key],
        "additionalProperties": False,
    }


def forced_call_output(
    tools: list[tuple[str, dict[str, Any] | None]], notation: CallNotation, parallel: bool
) -> StructuredOutput:
    """`tools`: the (name, parameters schema) pairs allowed. Each schema's $defs move to the top of the
    embedded schema, where their '#/$defs/...' references still point."""
    defs: dict[str, Any] = {}
    branches = []
    for name, parameters in tools:
        params = dict(parameters or EMPTY_PARAMETERS)
        defs.update(params.pop("$defs", {}) or {})
        branches.append(_call_schema(name, params, notation.arguments_key))
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    schema = {**schema, "x-guidance": COMPACT_JSON}
    embedded = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    parts = [_lark_string(notation.open)] if notation.open else []
    parts.append(f"%json{embedded}")
    parts += [_lark_string(notation.close)] if notation.close else []
    call = " ".join(parts)
    start = f"call ({_lark_string(notation.separator)} call)*" if parallel else "call"
    return StructuredOutput("grammar", f"start: {start}\ncall: {call}", param="tools")


@dataclass
class PartialCall:
    """One call of a forced reply as far as it has been written."""

    name: str | None = None  # once its string is complete
    arguments: str = ""  # the raw text of its arguments object so far (a substring of the reply)


def scan_calls(text: str) -> list[PartialCall]:
    """The call objects of a (possibly unfinished) forced reply: each top-level JSON object, whatever
    notation surrounds it (its tags hold no braces or quotes). Arguments are kept as the exact text the
    model wrote, so the pieces streamed of them join into the same valid JSON."""
    calls: list[PartialCall] = []
    depth = 0
    in_string = escaped = after_colon = False
    string_start = 0
    key: str | None = None
    args_start: int | None = None
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 1:
                    literal = json.loads(text[string_start : i + 1])
                    if not after_colon:
                        key = literal
                    elif key == "name" and calls:
                        calls[-1].name = literal
                    after_colon = False
        elif ch == '"':
            in_string, string_start = True, i
        elif ch in "{[":
            depth += 1
            if depth == 1 and ch == "{":
                calls.append(PartialCall())
                key, after_colon = None, False
            elif depth == 2 and after_colon and key in ARGUMENT_KEYS:
                args_start = i
            if depth == 2:
                after_colon = False
        elif ch in "}]":
            depth -= 1
            if depth == 1 and args_start is not None:
                calls[-1].arguments = text[args_start : i + 1]
                args_start = None
        elif depth == 1 and ch == ":":
            after_colon = True
        elif depth == 1 and ch == ",":
            key, after_colon = None, False
    if args_start is not None:
        calls[-1].arguments = text[args_start:]
    return calls
