"""Tool calling and reasoning on /v1/chat/completions: request tools, reply tool calls (whole and streamed
deltas), and the usage that counts reasoning tokens. Shapes follow openai-python's types/chat."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_serializer

from http_api.protocol_openai.common import RequestModel, ResponseModel, Usage


class FunctionDefinition(RequestModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema for the arguments object
    strict: bool | None = None


class ChatTool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class OmitNone(ResponseModel):
    """A reply part whose unset (None) fields are left out, as OpenAI leaves them out of deltas."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: Any) -> Any:
        return {k: v for k, v in handler(self).items() if v is not None}


class FunctionCall(ResponseModel):
    name: str
    arguments: str  # a JSON object, as text


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class DeltaFunctionCall(OmitNone):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(OmitNone):
    """A streamed piece of call `index`: the first has its id, type and name; the rest carry argument
    text, and all of a call's pieces join into its JSON arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class CompletionTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class ChatUsage(Usage):
    completion_tokens_details: CompletionTokensDetails | None = None  # with a reasoning parser

    @model_serializer(mode="wrap")
    def _omit_unset_details(self, handler: Any) -> Any:
        data = handler(self)
        if data.get("completion_tokens_details") is None:
            data.pop("completion_tokens_details", None)
        return data
