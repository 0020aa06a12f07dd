"""From a /v1/responses request to a generation, and from its result to the response object.

A response's conversation (what a later turn continues through previous_response_id) is kept as chat
template messages: the earlier turns, this turn's input items, and the model's reply as it wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.request import GenerationRequest
from engine.sampling import SamplingParams
from http_api.generation import Collected
from http_api.protocol_openai.responses import (
    FunctionCallItem,
    FunctionTool,
    MessageItem,
    ResponsesRequest,
    message_content,
    message_text,
)
from http_api.protocol_openai.responses import FunctionCallOutputItem as CallOutputItem
from http_api.protocol_openai.responses_output import (
    FunctionCall,
    IncompleteDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseErrorInfo,
    ResponseObject,
    ResponseStatus,
    ResponseUsage,
    item_id,
)
from http_api.structured_outputs import from_text_format
from http_api.tool_calls import call_text, output_text, split_calls, tools_prompt

Message = dict[str, Any]


def item_messages(
    items: list[MessageItem | FunctionCallItem | CallOutputItem], plain: bool, vision: bool = False
) -> list[Message]:
    """Input items as template messages. `plain`: the input was a string (its errors name 'input').
    `vision`: the model reads images (input_image parts become placeholders: message_content)."""
    messages: list[Message] = []
    for i, item in enumerate(items):
        where = "input" if plain else f"input[{i}]"
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": message_content(item, item.role, where, vision)})
        elif isinstance(item, FunctionCallItem):
            messages.append({"role": "assistant", "content": call_text(item.name, item.arguments)})
        else:
            messages.append({"role": "user", "content": output_text(message_text(item, "user", where))})
    return messages


def prompt_messages(
    instructions: str | None, tools: list[FunctionTool], history: list[Message]
) -> list[Message]:
    """What the model reads: a system message with the instructions and the tools it may call, then the
    conversation."""
    system = [text for text in (instructions, tools_prompt([t.model_dump() for t in tools]) if tools else "")]
    system = [text for text in system if text]
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + history


def sampling_params(req: ResponsesRequest, max_tokens: int) -> SamplingParams:
    """The request's own values; http_api/sampling_defaults fills in the ones it left unset."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        seed=req.seed,
        structured=from_text_format(req.text.format or {}) if req.text else None,
    )


@dataclass
class ResponsePlan:
    """One response, from the moment its request checked out."""

    id: str
    model: str
    req: ResponsesRequest
    tools: list[FunctionTool]
    calls_allowed: bool  # tools given and tool_choice 'auto': replies are searched for calls
    messages: list[Message]  # the conversation so far, without instructions, ending with this turn's input
    generation: GenerationRequest
    created_at: int = field(default_factory=lambda: int(time.time()))
    message_id: str = field(default_factory=lambda: item_id("msg"))

    def response(self, status: ResponseStatus, **fields: Any) -> ResponseObject:
        req, params = self.req, self.generation.params
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            status=status,
            background=bool(req.background),
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            max_tool_calls=req.max_tool_calls,
            metadata=dict(req.metadata or {}),
            model=self.model,
            parallel_tool_calls=req.parallel_tool_calls is not False,
            previous_response_id=req.previous_response_id,
            store=req.store is not False,
            temperature=params.temperature,  # what was used: the request's, else the model's default
            tool_choice=req.tool_choice or "auto",
            tools=[t.model_dump() for t in self.tools],
            top_p=params.top_p,
            user=req.user,
            **fields,
        )

    def failed(self, message: str) -> ResponseObject:
        return self.response("failed", error=ResponseErrorInfo(code="server_error", message=message))

    def finish(self, result: Collected) -> tuple[ResponseObject, list[Message]]:
        """(the finished response, the conversation through its reply)."""
        text, calls = result.text, []
        if self.calls_allowed:
            text, calls = split_calls(result.text, {t.name for t in self.tools})
            limit = 1 if self.req.parallel_tool_calls is False else self.req.max_tool_calls
            calls = calls[:limit] if limit else calls
        incomplete = result.finish_reason == "length"
        output: list[OutputItem] = []
        if text.strip() or not calls:
            status = "incomplete" if incomplete else "completed"
            content = [OutputText(text=text)]
            output.append(OutputMessage(id=self.message_id, status=status, content=content))
        for call in calls:
            output.append(
                FunctionCall(
                    id=item_id("fc"), call_id=item_id("call"), name=call.name, arguments=call.arguments,
                    status="completed",
                )
            )  # fmt: skip
        usage = ResponseUsage(
            input_tokens=result.prompt_tokens,
            output_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        )
        body = self.response(
            "incomplete" if incomplete else "completed",
            output=output,
            usage=usage,
            completed_at=int(time.time()),
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if incomplete else None,
        )
        return body, [*self.messages, {"role": "assistant", "content": result.text}]
