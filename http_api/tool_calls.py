"""Function calling without constrained decoding, in the Hermes convention most open chat models know.

The tools are described to the model in a system message; a call is the JSON object
`{"name": ..., "arguments": {...}}` between `<tool_call>` and `</tool_call>` in its text, which is parsed
out of the reply when it is there (nothing forces the model to produce one: a small model often will not).
Earlier calls and their outputs go back to the model in the same notation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)

TOOLS_PROMPT = """You can call functions to help with the user's request. The functions, as JSON schemas:
<tools>
{tools}
</tools>
To call a function, reply with a JSON object holding its name and arguments between tags, like this:
<tool_call>
{{"name": "function_name", "arguments": {{"argument": "value"}}}}
</tool_call>"""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


def tools_prompt(tools: list[dict[str, Any]]) -> str:
    """The system text that describes `tools` (the Responses API's function tool objects)."""
    lines = []
    for tool in tools:
        function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        lines.append(json.dumps({"type": "function", "function": function}, ensure_ascii=False))
    return TOOLS_PROMPT.format(tools="\n".join(lines))


def call_text(name: str, arguments: str) -> str:
    """An earlier call as the model would have written it."""
    try:
        args: Any = json.loads(arguments)
    except json.JSONDecodeError:
        args = arguments
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}\n{CLOSE}"


def output_text(output: str) -> str:
    """A function's output as the model reads it, in a user turn."""
    return f"<tool_response>\n{output}\n</tool_response>"


def _parse_call(body: str, names: set[str]) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
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
    return ToolCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


def split_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """(the text with every well-formed call to a known function cut out, those calls). Text before the
    first call is kept exactly, so whatever was streamed of it stays a prefix of the final text."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    pos = 0
    for match in _CALL.finditer(text):
        call = _parse_call(match.group(1), names)
        if call is None:
            continue
        kept.append(text[pos : match.start()])
        calls.append(call)
        pos = match.end()
    kept.append(text[pos:])
    rest = "".join(kept)
    return (rest if not calls or rest.strip() else ""), calls


def safe_prefix_len(text: str) -> int:
    """How much of a growing reply may be streamed as text: all of it up to a call's opening tag, less any
    ending that could still become one."""
    start = text.find(OPEN)
    if start >= 0:
        return start
    for keep in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:keep]):
            return len(text) - keep
    return len(text)
