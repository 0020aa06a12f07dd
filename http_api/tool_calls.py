"""Function calling: what a chat request's `tools` and `tool_choice` ask of the model (a ToolPlan), the call
ids, and the Hermes notation that the Responses API writes its prompt in.

On /v1/chat/completions the tools go to the chat template (the embedded SmolLM2 gets a tool-capable one,
engine/llm/chat.py). tool_choice "auto" lets the model call or not, and the calls are parsed out of its
text by the --tool-call-parser (http_api/tool_parsers/); "required" and a named function force a call
with a grammar (http_api/tool_parsers/forced.py), so the arguments always validate; "none" shows the tools
but parses nothing, as vLLM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator, SchemaError, validators

from engine.structured_output import StructuredOutput
from http_api.errors import bad_request
from http_api.structured_outputs import checked
from http_api.tool_parsers import DEFAULT_TOOL_PARSER, ParsedCall, ToolParser, tool_parser
from http_api.tool_parsers.forced import forced_call_output
from http_api.tool_parsers.hermes import CLOSE, OPEN, HermesToolParser

ToolMode = Literal["none", "auto", "required", "named"]


@dataclass(frozen=True)
class ToolSettings:
    """The server's tool options (--tool-call-parser, --enable-auto-tool-choice)."""

    parser: str | None
    auto: bool


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]]  # OpenAI tool objects, for the chat template
    names: frozenset[str]
    mode: ToolMode
    named: str | None = None  # the function a named tool_choice forces
    structured: StructuredOutput | None = None  # the grammar of a forced call
    parser: ToolParser | None = None  # mode "auto": reads calls out of the text
    parallel: bool = True


def check_parameters(schema: Any, param: str) -> None:
    """A function's `parameters` must be a JSON Schema for an object; 400 naming what is wrong."""
    if not isinstance(schema, dict):
        raise bad_request(f"{param} must be a JSON Schema object", param=param, code="invalid_schema")
    validator = validators.validator_for(schema, default=Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise bad_request(
            f"{param} is not a valid JSON Schema: {exc.message}" + (f" (at '{where}')" if where else ""),
            param=param,
            code="invalid_schema",
        ) from None
    if schema.get("type", "object") != "object":
        raise bad_request(
            f"{param} must describe an object (type 'object'), not type {json.dumps(schema['type'])}",
            param=param,
            code="invalid_schema",
        )


def _named_choice(choice: dict[str, Any], names: set[str]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise bad_request(
            "tool_choice must be 'none', 'auto', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    if name not in names:
        raise bad_request(
            f"tool_choice names the function '{name}', which is not in tools", param="tool_choice"
        )
    return name


def _mode(tool_choice: str | dict[str, Any] | None, has_tools: bool) -> ToolMode:
    if tool_choice is None:
        return "auto" if has_tools else "none"
    if isinstance(tool_choice, dict):
        return "named"
    if tool_choice not in ("none", "auto", "required"):
        raise bad_request(
            f"tool_choice must be 'none', 'auto', 'required' or a named function, not '{tool_choice}'",
            param="tool_choice",
        )
    return tool_choice  # type: ignore[return-value]


def plan_tools(
    tools: list[dict[str, Any]] | None,
    tool_choice: str | dict[str, Any] | None,
    parallel_tool_calls: bool | None,
    settings: ToolSettings,
) -> ToolPlan | None:
    """The plan for a request's tools (already shaped as OpenAI tool objects); None without tools.
    400 for a tool_choice that names no given tool, needs tools that are absent, or asks for "auto" on a
    server without a tool-call parser."""
    mode = _mode(tool_choice, bool(tools))
    if not tools:
        if mode != "none":
            raise bad_request("tool_choice needs tools: none were given", param="tool_choice")
        return None
    functions = {t["function"]["name"]: t["function"].get("parameters") for t in tools}
    for i, tool in enumerate(tools):
        if tool["function"].get("parameters") is not None:
            check_parameters(tool["function"]["parameters"], f"tools[{i}].function.parameters")
    names = frozenset(functions)
    parallel = parallel_tool_calls is not False
    notation = tool_parser(settings.parser or DEFAULT_TOOL_PARSER).notation
    if mode == "named":
        named = _named_choice(tool_choice, set(names))  # type: ignore[arg-type]
        forced = forced_call_output([(named, functions[named])], notation, parallel=False)
        return ToolPlan(tools, names, mode, named=named, structured=checked(forced), parallel=parallel)
    if mode == "required":
        forced = forced_call_output(list(functions.items()), notation, parallel)
        return ToolPlan(tools, names, mode, structured=checked(forced), parallel=parallel)
    if mode == "auto":
        if not settings.auto or settings.parser is None:
            raise bad_request(
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                param="tool_choice",
            )
        return ToolPlan(tools, names, mode, parser=tool_parser(settings.parser), parallel=parallel)
    return ToolPlan(tools, names, mode, parallel=parallel)


# ---- the Responses API's prompt, in the same Hermes notation the chat template uses ----

TOOLS_PROMPT = """You can call functions to help with the user's request. The functions, as JSON schemas:
<tools>
{tools}
</tools>
To call a function, reply with a JSON object holding its name and arguments between tags, like this:
<tool_call>
{{"name": "function_name", "arguments": {{"argument": "value"}}}}
</tool_call>"""

_hermes = HermesToolParser()


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


def forced_calls(tools: list[dict[str, Any]], named: str | None, parallel: bool) -> StructuredOutput:
    """The grammar of a Responses reply that must call a function (tool_choice "required", or the one
    `named`), in the Hermes notation the Responses prompt describes. 400 for a name not among `tools`."""
    functions = {t["name"]: t.get("parameters") for t in tools}
    if named is not None and named not in functions:
        raise bad_request(
            f"tool_choice names the function '{named}', which is not in tools", param="tool_choice"
        )
    chosen = [(named, functions[named])] if named is not None else list(functions.items())
    return checked(forced_call_output(chosen, _hermes.notation, parallel and named is None))


def split_calls(text: str, names: set[str]) -> tuple[str, list[ParsedCall]]:
    """(the text with every well-formed call to a known function cut out, those calls)."""
    return _hermes.extract(text, names)


def safe_prefix_len(text: str) -> int:
    """How much of a growing reply may be streamed as text (up to a call's opening tag)."""
    return _hermes.content_prefix_len(text)
