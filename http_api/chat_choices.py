"""A chat reply split into its parts: the model's thinking (--reasoning-parser), its text, and its tool
calls (http_api/tool_calls.py), as it streams (ReplyStream) or whole (split_reply, which runs the same
stream over the whole text, so a streamed reply joins into exactly what a non-streamed one returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from http_api.protocol_openai.chat import AssistantMessage, ChatCompletionRequest, ChatDelta
from http_api.protocol_openai.chat_tools import (
    ChatUsage,
    CompletionTokensDetails,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from http_api.reasoning_parsers import (
    ReasoningParser,
    ReasoningStream,
    reasoning_parser,
    reasoning_token_count,
)
from http_api.tool_calls import ToolPlan
from http_api.tool_parsers.streams import AutoCalls, CallPiece, CallReader, ForcedCalls

PROMPT_TAIL_TOKENS = 256  # how much of the prompt's end is read to see whether it already closed thinking


@dataclass(frozen=True)
class ReplyRules:
    """How one request's replies are read."""

    reasoning: ReasoningParser | None  # None: nothing to split off (no parser, or no thinking this time)
    counts_reasoning: bool  # a reasoning parser is on: usage reports reasoning_tokens
    include_reasoning: bool = True
    stream_reasoning: bool = True
    tools: ToolPlan | None = None


def reply_rules(
    req: ChatCompletionRequest,
    parser_name: str | None,
    tools: ToolPlan | None,
    tokenizer: Any,
    prompt: list[int],
) -> ReplyRules:
    parser = reasoning_parser(parser_name) if parser_name and req.separate_reasoning else None
    if parser is not None:
        thinking_over = parser.ended_in(tokenizer.decode(prompt[-PROMPT_TAIL_TOKENS:]))
        if thinking_over or not parser.thinks(req.chat_template_kwargs):
            parser = None
    return ReplyRules(
        reasoning=parser, counts_reasoning=parser_name is not None, include_reasoning=req.include_reasoning,
        stream_reasoning=req.stream_reasoning, tools=tools,
    )  # fmt: skip


def _call_reader(plan: ToolPlan | None) -> CallReader | None:
    if plan is None or plan.mode == "none":
        return None
    if plan.mode in ("named", "required"):
        return ForcedCalls()
    assert plan.parser is not None
    return AutoCalls(plan.parser, set(plan.names), plan.parallel)


def _wire_piece(piece: CallPiece) -> DeltaToolCall:
    if piece.name is not None:
        return DeltaToolCall(
            index=piece.index, id=piece.id, type="function",
            function=DeltaFunctionCall(name=piece.name, arguments=piece.arguments),
        )  # fmt: skip
    return DeltaToolCall(index=piece.index, function=DeltaFunctionCall(arguments=piece.arguments))


@dataclass
class ReplyStream:
    rules: ReplyRules
    thinking: ReasoningStream | None = None
    calls: CallReader | None = None
    called: bool = False  # a tool call was sent

    def __post_init__(self) -> None:
        if self.rules.reasoning is not None:
            self.thinking = ReasoningStream(self.rules.reasoning, self.rules.stream_reasoning)
        self.calls = _call_reader(self.rules.tools)

    def feed(self, text: str) -> list[ChatDelta]:
        """The deltas that a new piece of generated text makes sendable (none while it is held back)."""
        reasoning, content = self.thinking.feed(text) if self.thinking else ("", text)
        return self._deltas(reasoning, content, final=False)

    def finish(self) -> list[ChatDelta]:
        """What was held back, once the reply is complete."""
        reasoning, content = self.thinking.finish() if self.thinking else ("", "")
        return self._deltas(reasoning, content, final=True)

    @property
    def reasoning_chars(self) -> int:
        return self.thinking.reasoning_chars if self.thinking else 0

    def _deltas(self, reasoning: str, content: str, final: bool) -> list[ChatDelta]:
        pieces: list[CallPiece] = []
        if self.calls is not None:
            content, pieces = self.calls.feed(content, final)
        thought = reasoning if reasoning and self.rules.include_reasoning else None
        out = []
        if thought or content:
            out.append(ChatDelta(content=content or None, reasoning_content=thought, reasoning=thought))
        out += [ChatDelta(tool_calls=[_wire_piece(piece)]) for piece in pieces]
        self.called = self.called or bool(pieces)
        return out


@dataclass
class ReplyParts:
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning_chars: int = 0


def split_reply(text: str, rules: ReplyRules) -> ReplyParts:
    stream = ReplyStream(rules)
    deltas = stream.feed(text) + stream.finish()
    content = "".join(d.content or "" for d in deltas)
    reasoning = "".join(d.reasoning_content or "" for d in deltas)
    calls: list[ToolCall] = []
    for piece in (p for d in deltas for p in d.tool_calls or []):
        function = piece.function or DeltaFunctionCall()
        if piece.id is not None:
            calls.append(ToolCall(id=piece.id, function=FunctionCall(name=function.name or "", arguments="")))
        calls[piece.index].function.arguments += function.arguments or ""
    return ReplyParts(
        content=content if content or not (calls or reasoning) else None,
        reasoning=reasoning or None,
        tool_calls=calls,
        reasoning_chars=stream.reasoning_chars,
    )


def assistant_message(parts: ReplyParts, prefix: str = "") -> AssistantMessage:
    content = prefix + parts.content if parts.content is not None else (prefix or None)
    return AssistantMessage(
        content=content, tool_calls=parts.tool_calls or None, reasoning_content=parts.reasoning,
        reasoning=parts.reasoning,
    )  # fmt: skip


def finish_reason(reason: str | None, called: bool) -> str | None:
    """A reply that ended normally after calling tools ends with "tool_calls", as OpenAI's do."""
    return "tool_calls" if called and reason == "stop" else reason


def chat_usage(
    rules: ReplyRules, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int
) -> ChatUsage:
    details = CompletionTokensDetails(reasoning_tokens=reasoning_tokens) if rules.counts_reasoning else None
    return ChatUsage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens, completion_tokens_details=details,
    )  # fmt: skip


def count_reasoning_tokens(tokenizer: Any, token_ids: list[int], reasoning_chars: int) -> int:
    if reasoning_chars <= 0 or not token_ids:
        return 0
    return reasoning_token_count(tokenizer.decode, list(token_ids), reasoning_chars)
