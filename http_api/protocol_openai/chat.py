"""POST /v1/chat/completions bodies, and the chat message the tokenize route shares."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import Field

from http_api.errors import APIError, bad_request, unsupported
from http_api.media import IMAGE_PART_TYPES, VIDEO_PART_TYPES, MediaRef, media_ref
from http_api.protocol_openai.chat_tools import ChatTool, ChatUsage, DeltaToolCall, ToolCall
from http_api.protocol_openai.common import (
    PromptLogprob,
    RequestModel,
    ResponseModel,
    SamplingFields,
    VLLMExtrasResponse,
)

MEDIA_PART_TYPES = ("image_url", "input_image", "image", "input_audio", "audio_url", "file", "video_url")


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any | None = None
    refusal: str | None = None

    def to_template(self, index: int, media: list[MediaRef] | None = None) -> dict[str, Any]:
        """The {role, content} dict a chat template expects (plus tool_calls, tool_call_id); anything the
        model cannot take is a 400. `media`: the model reads images (and videos): content becomes the HF
        multimodal parts ({"type": "text", "text"}, {"type": "image"}, {"type": "video"}) and each
        image's or video's reference is appended to `media`, in order."""
        where = f"messages[{index}]"
        if self.role == "function" or self.function_call:
            raise unsupported(f"{where}.function_call", "use tools and tool_calls instead of functions")
        if self.tool_calls and self.role != "assistant":
            raise bad_request(
                f"{where}.tool_calls is only for assistant messages", param=f"{where}.tool_calls"
            )
        message = self._text_message(where) if media is None else self._media_message(where, media)
        if self.tool_calls:
            message["tool_calls"] = template_tool_calls(self.tool_calls, f"{where}.tool_calls")
        if self.role == "tool" and self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    def _text_message(self, where: str) -> dict[str, Any]:
        role = "system" if self.role == "developer" else self.role
        if self.content is None:
            if role != "assistant":
                raise bad_request(
                    f"{where}.content is required for role '{self.role}'", param=f"{where}.content"
                )
            return {"role": role, "content": ""}
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        texts = [part_text(part, role, f"{where}.content[{j}]") for j, part in enumerate(self.content)]
        return {"role": role, "content": "\n".join(texts)}

    def _media_message(self, where: str, media: list[MediaRef]) -> dict[str, Any]:
        role = "system" if self.role == "developer" else self.role
        if self.content is None or isinstance(self.content, str):
            return {"role": role, "content": [{"type": "text", "text": self._text_message(where)["content"]}]}
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(self.content):
            kind = part.get("type")
            if kind in IMAGE_PART_TYPES or kind in VIDEO_PART_TYPES:
                ref = media_ref(part, f"{where}.content[{j}]")
                media.append(ref)
                parts.append({"type": ref.kind})
            elif kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            else:
                parts.append({"type": "text", "text": part_text(part, role, f"{where}.content[{j}]")})
        return {"role": role, "content": parts or [{"type": "text", "text": ""}]}


def part_text(part: dict[str, Any], role: str, where: str) -> str:
    """A text (or an assistant's refusal) part's text; any other part the model cannot read is a 400."""
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return part["text"]
    if kind in MEDIA_PART_TYPES:
        raise APIError(
            f"{where} is a '{kind}' part, but the served model only reads text",
            param=f"{where}.type",
            code="unsupported_content_type",
        )
    if kind == "refusal" and role == "assistant":
        return str(part.get("refusal", ""))
    raise bad_request(f"{where} must be a text part {{'type': 'text', 'text': ...}}", param=where)


def template_tool_calls(calls: list[Any], where: str) -> list[dict[str, Any]]:
    """An assistant message's earlier calls as chat templates read them: arguments as an object (vLLM
    does the same), or as the text sent when that is not JSON."""
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(
                f"{where}[{j}] must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}",
                param=f"{where}[{j}]",
            )
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        named = {"name": function["name"], "arguments": arguments}
        out.append({"id": call.get("id"), "type": "function", "function": named})
    return out


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    # response_format, structured_outputs, guided_*: SamplingFields (http_api/structured_outputs.py)
    modalities: list[str] | None = None
    chat_template: str | None = None  # vLLM's: refused unless --trust-request-chat-template
    chat_template_kwargs: dict[str, Any] | None = None
    # vLLM's: echo prepends a final assistant message to the reply (the one continue_final_message
    # continues); add_special_tokens adds the tokenizer's BOS on top of what the template writes.
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    # Accepted and ignored: they change nothing for a local, stateless server.
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Function calling (http_api/tool_calls.py)
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Reasoning (with --reasoning-parser): vLLM's include_reasoning, SGLang's separate_reasoning (False: the
    # thinking stays in content) and stream_reasoning (False: streamed in one piece when it ends)
    include_reasoning: bool = True
    separate_reasoning: bool = True
    stream_reasoning: bool = True
    # Declared so they get a clear "not supported" instead of "unrecognized".
    functions: Any | None = None
    function_call: Any | None = None
    audio: Any | None = None
    prediction: Any | None = None
    web_search_options: Any | None = None
    reasoning_effort: Any | None = None
    verbosity: Any | None = None

    def check_supported(self) -> None:
        self.check_stream_options()
        self.check_vllm_options()
        if (
            self.continue_final_message
            and self.add_generation_prompt
            and ("add_generation_prompt" in self.model_fields_set)
        ):
            raise bad_request(
                "continue_final_message and add_generation_prompt cannot both be true",
                param="continue_final_message",
            )
        if self.functions:
            raise unsupported("functions", "use tools instead")
        if self.function_call not in (None, "none"):
            raise unsupported("function_call", "use tool_choice instead")
        for name in ("audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"):
            if getattr(self, name) is not None:
                raise unsupported(name)
        if self.modalities is not None and self.modalities != ["text"]:
            raise unsupported("modalities", "the served model only writes text")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs requires logprobs to be true", param="top_logprobs")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def engine_prompt_logprobs(self) -> int | None:
        """prompt_logprobs, or with echo and logprobs the top_logprobs asked for (as vLLM)."""
        if self.prompt_logprobs is not None:
            return self.prompt_logprobs
        return self.logprobs_k() if self.echo else None

    def echoed_prefix(self) -> str:
        """With echo, a final assistant message's text (what the reply continues); else nothing."""
        last = self.messages[-1]
        if not self.echo or last.role != "assistant":
            return ""
        return last.to_template(len(self.messages) - 1)["content"]


class TopLogprobEntry(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobEntry]


class ChatChoiceLogprobs(ResponseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class AssistantMessage(VLLMExtrasResponse):
    VLLM_EXTRAS = ("tool_calls", "reasoning_content", "reasoning")

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    # vLLM's (reasoning_content is its older name of the same text, still sent)
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChatChoice(VLLMExtrasResponse):
    VLLM_EXTRAS = ("token_ids",)

    index: int
    message: AssistantMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None
    token_ids: list[int] | None = None


class ChatCompletion(VLLMExtrasResponse):
    VLLM_EXTRAS = ("prompt_logprobs", "prompt_token_ids")

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    system_fingerprint: str | None = None
    prompt_logprobs: list[dict[int, PromptLogprob] | None] | None = None
    prompt_token_ids: list[int] | None = None


class ChatDelta(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(VLLMExtrasResponse):
    VLLM_EXTRAS = ("token_ids",)

    index: int
    delta: ChatDelta
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class ChatCompletionChunk(VLLMExtrasResponse):
    VLLM_EXTRAS = ("prompt_token_ids",)

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: ChatUsage | None = None
    system_fingerprint: str | None = None
    prompt_token_ids: list[int] | None = None

    def to_json(self, with_usage_field: bool) -> dict:
        body = self.model_dump(exclude={"usage"} if not with_usage_field else None)
        for choice in body["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return body
