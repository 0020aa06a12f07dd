"""Tool-call parsers, one per model family, chosen with `--tool-call-parser NAME` (vLLM's names)."""

from __future__ import annotations

from http_api.tool_parsers.base import ParsedCall, ToolParser
from http_api.tool_parsers.hermes import HermesToolParser
from http_api.tool_parsers.llama3_json import Llama3JsonToolParser

TOOL_PARSERS: dict[str, ToolParser] = {
    "hermes": HermesToolParser(),
    "qwen25": HermesToolParser(),  # SGLang's name for the same format
    "llama3_json": Llama3JsonToolParser(),
    "llama3": Llama3JsonToolParser(),  # SGLang's name
}
DEFAULT_TOOL_PARSER = "hermes"  # what the embedded SmolLM2's tool template asks the model to write


def tool_parser(name: str) -> ToolParser:
    """The parser called `name`; KeyError names the known ones."""
    if name not in TOOL_PARSERS:
        raise KeyError(f"unknown tool-call parser '{name}' (known: {', '.join(sorted(TOOL_PARSERS))})")
    return TOOL_PARSERS[name]


__all__ = ["DEFAULT_TOOL_PARSER", "TOOL_PARSERS", "ParsedCall", "ToolParser", "tool_parser"]
