"""POST /v1/responses with stream: true. The events, in the order the official SDK expects:

    response.created, response.in_progress,
    response.output_item.added, response.content_part.added,
    response.output_text.delta ..., response.output_text.done,
    response.content_part.done, response.output_item.done,
    (per function call: response.output_item.added, response.function_call_arguments.delta and .done,
     response.output_item.done,)
    response.completed (response.incomplete when max_output_tokens cut it short; response.failed on error)

each as `event: <type>` + `data: <json>` with a sequence_number counted from 0 (no [DONE]: the Responses
API ends with its last event). With function tools the text is streamed up to a `<tool_call>` tag.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from engine.interface import EngineClient
from http_api import sse
from http_api.errors import APIError
from http_api.generation import Collected, closing, fan_out
from http_api.protocol_openai.responses_output import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    FunctionCall,
    LifecycleEvent,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    ResponseEvent,
    ResponseObject,
    TextDeltaEvent,
    TextDoneEvent,
)
from http_api.responses_build import Message, ResponsePlan
from http_api.tool_calls import safe_prefix_len

log = logging.getLogger("rtserve.http")


class EventWriter:
    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.sequence_number = 0

    async def send(self, events: list[ResponseEvent]) -> None:
        for event in events:
            event.sequence_number = self.sequence_number
            self.sequence_number += 1
            data = json.dumps(event.model_dump(), ensure_ascii=False)
            await self.response.write(f"event: {event.type}\ndata: {data}\n\n".encode())


class TextStream:
    """The assistant message's events while the reply grows: the message opens with its first visible
    text, and with function tools no text past a `<tool_call>` tag is sent as text."""

    def __init__(self, message_id: str, calls_allowed: bool) -> None:
        self.message_id = message_id
        self.calls_allowed = calls_allowed
        self.text = ""
        self.sent = 0
        self.opened = False

    def _open(self) -> list[ResponseEvent]:
        self.opened = True
        return [
            OutputItemEvent(
                type="response.output_item.added", output_index=0, item=OutputMessage(id=self.message_id)
            ),
            ContentPartEvent(
                type="response.content_part.added", item_id=self.message_id, output_index=0, part=OutputText()
            ),
        ]

    def _delta(self, delta: str) -> TextDeltaEvent:
        return TextDeltaEvent(item_id=self.message_id, output_index=0, delta=delta)

    def feed(self, delta: str) -> list[ResponseEvent]:
        self.text += delta
        end = safe_prefix_len(self.text) if self.calls_allowed else len(self.text)
        if end <= self.sent or (not self.opened and not self.text[:end].strip()):
            return []
        events = [] if self.opened else self._open()
        events.append(self._delta(self.text[self.sent : end]))
        self.sent = end
        return events

    def finish(self, final: ResponseObject) -> list[ResponseEvent]:
        """The rest of the events, from the finished response (whose message text starts with what was
        sent: a call is only ever cut from past the point the text stream stopped at)."""
        events: list[ResponseEvent] = []
        for index, item in enumerate(final.output):
            if isinstance(item, OutputMessage):
                part = item.content[0]
                events += [] if self.opened else self._open()
                if part.text[self.sent :]:
                    events.append(self._delta(part.text[self.sent :]))
                events += [
                    TextDoneEvent(item_id=item.id, output_index=index, text=part.text),
                    ContentPartEvent(
                        type="response.content_part.done", item_id=item.id, output_index=index, part=part
                    ),
                    OutputItemEvent(type="response.output_item.done", output_index=index, item=item),
                ]
            else:
                events += call_events(index, item)
        return events


def call_events(index: int, call: FunctionCall) -> list[ResponseEvent]:
    started = call.model_copy(update={"arguments": "", "status": "in_progress"})
    return [
        OutputItemEvent(type="response.output_item.added", output_index=index, item=started),
        ArgumentsDeltaEvent(item_id=call.id, output_index=index, delta=call.arguments),
        ArgumentsDoneEvent(item_id=call.id, output_index=index, name=call.name, arguments=call.arguments),
        OutputItemEvent(type="response.output_item.done", output_index=index, item=call),
    ]


def lifecycle(kind: str, body: ResponseObject) -> LifecycleEvent:
    return LifecycleEvent(type=f"response.{kind}", response=body)  # type: ignore[arg-type]


async def run_stream(
    engine: EngineClient, plan: ResponsePlan, writer: EventWriter
) -> tuple[ResponseObject, list[Message]]:
    started = plan.response("in_progress")
    await writer.send([lifecycle("created", started), lifecycle("in_progress", started)])
    text = TextStream(plan.message_id, plan.calls_allowed)
    result = Collected()
    async with closing(fan_out(engine, [plan.generation])) as stream:
        async for _, out in stream:
            result.add(out)  # raises RequestAborted when the server aborts it
            await writer.send(text.feed(out.text))
    final, conversation = plan.finish(result)
    await writer.send(text.finish(final))
    await writer.send([lifecycle("incomplete" if final.status == "incomplete" else "completed", final)])
    return final, conversation


async def stream_response(
    request: web.Request, engine: EngineClient, plan: ResponsePlan
) -> tuple[web.StreamResponse, tuple[ResponseObject, list[Message]] | None]:
    """Stream the response; (the HTTP response, the finished response and conversation, or None when it
    failed or the client left)."""
    response = await sse.open_stream(request)
    writer = EventWriter(response)
    try:
        return response, await run_stream(engine, plan, writer)
    except ConnectionResetError:
        pass  # the client is gone; leaving the stream aborted the generation
    except Exception as exc:
        if not isinstance(exc, APIError):
            log.exception("responses stream failed")
        message = exc.message if isinstance(exc, APIError) else "The server had an internal error"
        try:
            await writer.send([lifecycle("failed", plan.failed(message))])
        except ConnectionResetError:
            pass
    return response, None
