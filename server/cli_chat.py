"""`rtserve serve` flags for chat: the chat template, the tool-call parser, the reasoning parser (vLLM's
names and meanings)."""

from __future__ import annotations

import argparse

from engine.llm.chat import load_chat_template
from http_api.reasoning_parsers import REASONING_PARSERS, reasoning_parser
from http_api.tool_parsers import DEFAULT_TOOL_PARSER, TOOL_PARSERS, tool_parser


def chat_template_arg(text: str) -> str:
    try:
        load_chat_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def tool_parser_arg(text: str) -> str | None:
    if text.lower() == "none":
        return None
    try:
        tool_parser(text)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(exc.args[0]) from None
    return text


def reasoning_parser_arg(text: str) -> str:
    try:
        reasoning_parser(text)
    except KeyError as exc:
        raise argparse.ArgumentTypeError(exc.args[0]) from None
    return text


def add_chat_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("chat (templates, tool calls, reasoning)")
    group.add_argument(
        "--chat-template", type=chat_template_arg, default=None, metavar="PATH|TEMPLATE",
        help="a Jinja chat template file, or the template itself, in place of the LLM's own for every chat "
        "(default: the model's; with tools, the embedded SmolLM2 gets rtserve's tool template)",
    )  # fmt: skip
    group.add_argument(
        "--tool-call-parser", type=tool_parser_arg, default=DEFAULT_TOOL_PARSER, metavar="NAME",
        help=f"how tool calls are read from the model's text for tool_choice 'auto': "
        f"{', '.join(sorted(TOOL_PARSERS))}, or none. hermes (<tool_call> tags) is what the embedded "
        f"SmolLM2's tool template asks for; llama3_json suits Llama 3.x",
    )  # fmt: skip
    group.add_argument(
        "--enable-auto-tool-choice", action=argparse.BooleanOptionalAction, default=True,
        help="let the model decide whether to call a tool (tool_choice 'auto', the default with tools); "
        "--no-enable-auto-tool-choice refuses 'auto' with a 400, as vLLM does without the flag",
    )  # fmt: skip
    group.add_argument(
        "--reasoning-parser", type=reasoning_parser_arg, default=None, metavar="NAME",
        help=f"split the model's thinking from its answer (message.reasoning_content): "
        f"{', '.join(sorted(REASONING_PARSERS))}; default: none (thinking stays in content)",
    )  # fmt: skip
