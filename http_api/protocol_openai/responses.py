"""POST /v1/responses request bodies: the request, its input items and function tools.

Input items arrive as plain dicts and are parsed one by one (`input_messages`), so that an error names the
item it is about (`input[2].content[0]`) rather than a union member pydantic tried.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from http_api.errors import APIError, bad_request, unsupported, validation_error
from http_api.media import media_placeholder, media_ref
from http_api.protocol_openai.common import INT64_MAX, INT64_MIN, RequestModel, StreamOptions

UNSUPPORTED_PARTS = ("input_image", "input_file", "input_audio", "image_url", "file")


def parse_at(model: type[pydantic.BaseModel], data: Any, where: str) -> Any:
    """Validate one nested object; a 400 that names it (`where`) and the field at fault."""
    if not isinstance(data, dict):
        raise bad_request(f"{where} must be an object", param=where, code="invalid_type")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        error = validation_error(exc)
        param = f"{where}.{error.param}" if error.param else where
        raise APIError(f"{where}: {error.message}", param=param, code=error.code) from exc


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextConfig(RequestModel):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class MessageItem(RequestModel):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(RequestModel):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[dict[str, Any]]
    id: str | None = None
    status: str | None = None


def part_text(part: dict[str, Any], role: str, where: str) -> str:
    kind = part.get("type")
    if kind in UNSUPPORTED_PARTS:
        raise APIError(
            f"{where} is an '{kind}' part, but the served model only reads text",
            param=f"{where}.type",
            code="unsupported_content_type",
        )
    wanted = "output_text" if role == "assistant" else "input_text"
    if kind in (wanted, "text") and isinstance(part.get("text"), str):
        return part["text"]
    if kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
        return part["refusal"]
    raise bad_request(f"{where} must be an '{wanted}' part {{'type': '{wanted}', 'text': ...}}", param=where)


def message_text(item: MessageItem | FunctionCallOutputItem, role: str, where: str) -> str:
    content = item.content if isinstance(item, MessageItem) else item.output
    if isinstance(content, str):
        return content
    field = "content" if isinstance(item, MessageItem) else "output"
    return "\n".join(part_text(part, role, f"{where}.{field}[{j}]") for j, part in enumerate(content))


def message_content(
    item: MessageItem | FunctionCallOutputItem, role: str, where: str, vision: bool
) -> str | list[dict[str, Any]]:
    """An input message's content for the chat template: its text, or for a vision-language model its
    parts, each input_image a placeholder carrying its reference (http_api/media.py split_media)."""
    if not vision or not isinstance(item, MessageItem) or isinstance(item.content, str):
        return message_text(item, role, where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(item.content):
        at = f"{where}.content[{j}]"
        if part.get("type") == "input_image":
            parts.append(media_placeholder(media_ref(part, at)))
        else:
            parts.append({"type": "text", "text": part_text(part, role, at)})
    return parts


def input_item(data: Any, where: str) -> MessageItem | FunctionCallItem | FunctionCallOutputItem:
    kind = data.get("type", "message") if isinstance(data, dict) else None
    if kind == "message":
        return parse_at(MessageItem, data, where)
    if kind == "function_call":
        return parse_at(FunctionCallItem, data, where)
    if kind == "function_call_output":
        return parse_at(FunctionCallOutputItem, data, where)
    if isinstance(kind, str):
        raise unsupported(f"{where}.type", f"input items of type '{kind}' are not available")
    raise bad_request(f"{where} must be an input item object with a 'type'", param=where)


class ResponsesRequest(RequestModel):
    model: str | None = None  # None: the served LLM
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    previous_response_id: str | None = None
    store: bool | None = True
    background: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    top_logprobs: int | None = None
    reasoning: dict[str, Any] | None = None
    # Accepted and ignored: they change nothing for a local server.
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    # vLLM's extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    # Declared so they get a clear "not supported" instead of "unrecognized".
    conversation: Any | None = None
    prompt: Any | None = None
    context_management: Any | None = None
    background_options: Any | None = None
    moderation: Any | None = None
    prompt_cache_options: Any | None = None

    def check_supported(self) -> None:
        for name in ("prompt", "context_management", "background_options", "moderation"):
            if getattr(self, name) is not None:
                raise unsupported(name)
        if self.conversation is not None:
            raise unsupported("conversation", "chain turns with previous_response_id")
        if self.truncation == "auto":
            raise unsupported("truncation", "only 'disabled' is available")
        if self.include:
            raise unsupported("include", f"'{self.include[0]}' is not available")
        if self.top_logprobs:
            raise unsupported("top_logprobs")
        if self.reasoning and any(v is not None for v in self.reasoning.values()):
            raise unsupported("reasoning", "the served model does not reason")
        if self.background and self.stream:
            raise unsupported("background", "a background response cannot stream; poll it with GET")
        if self.background and self.store is False:
            raise bad_request("a background response must be stored (store: true)", param="background")
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true", param="stream_options")

    def function_tools(self) -> list[FunctionTool]:
        tools = []
        for i, tool in enumerate(self.tools or []):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind != "function":
                raise unsupported(f"tools[{i}].type", f"only function tools are available, not '{kind}'")
            tools.append(parse_at(FunctionTool, tool, f"tools[{i}]"))
        return tools

    def tool_mode(self) -> Literal["auto", "none", "required", "named"]:
        """What tool_choice asks of the model: "auto" (it may call), "none", "required" (it must call one of
        the tools) or "named" (it must call forced_tool_name())."""
        choice = self.tool_choice
        if choice is None or choice in ("auto", "none", "required"):
            return choice or "auto"  # type: ignore[return-value]
        if (
            isinstance(choice, dict)
            and choice.get("type") == "function"
            and isinstance(choice.get("name"), str)
        ):
            return "named"
        if isinstance(choice, dict) and isinstance(choice.get("type"), str) and choice["type"] != "function":
            raise unsupported("tool_choice", f"only function tools are available, not '{choice['type']}'")
        raise bad_request(
            "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'name': ...}",
            param="tool_choice",
        )

    def forced_tool_name(self) -> str | None:
        """The function a named tool_choice forces (None for any other choice)."""
        choice = self.tool_choice
        return choice["name"] if self.tool_mode() == "named" and isinstance(choice, dict) else None

    def input_items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        if not self.input:
            raise bad_request("input must not be empty", param="input")
        return [input_item(data, f"input[{i}]") for i, data in enumerate(self.input)]
