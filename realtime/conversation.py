"""Conversation mode: user turns become items, the LLM answers with streamed text responses.

The item history is the model's context; when it no longer fits `engine.max_model_len` the oldest items
are dropped first. One response runs at a time. Cancelling its task (response.cancel, barge-in, or the
socket closing) aborts the engine request; the response still ends with `response.done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from engine.llm.chat import encode_chat
from engine.request import GenerationRequest, Priority
from engine.sampling import SamplingParams
from realtime import protocol_openai as oa
from realtime.outbox import Outbox

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_TOKENS = 512  # what "inf" means here: small models ramble
MIN_REPLY_TOKENS = 64  # drop old items until at least this much room is left for the answer

Role = Literal["user", "assistant", "system"]


@dataclass
class Item:
    id: str
    role: Role
    text: str | None  # None while a user turn is still being transcribed
    audio: bool = False
    status: Literal["completed", "incomplete", "in_progress"] = "completed"

    def to_event_item(self) -> oa.MessageItem:
        if self.role == "assistant":
            content = [oa.ContentPart(type="output_text", text=self.text or "")]
        elif self.audio:
            content = [oa.ContentPart(type="input_audio", transcript=self.text)]
        else:
            content = [oa.ContentPart(type="input_text", text=self.text or "")]
        return oa.MessageItem(id=self.id, role=self.role, status=self.status, content=content)


class ConversationError(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class ResponseOptions:
    instructions: str
    max_output_tokens: int | None
    metadata: dict[str, str] | None = None


class Conversation:
    def __init__(self, engine: EngineClient, outbox: Outbox, conversation_id: str) -> None:
        self.engine = engine
        self.outbox = outbox
        self.id = conversation_id
        self.items: list[Item] = []
        self._task: asyncio.Task | None = None
        self.response_id: str | None = None
        self._cancel_reason = "client_cancelled"

    @property
    def last_item_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    @property
    def responding(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- items ----

    def _add(self, item: Item) -> None:
        previous = self.last_item_id
        self.items.append(item)
        self.outbox.send(oa.ConversationItemAddedEvent(previous_item_id=previous, item=item.to_event_item()))
        if item.status != "in_progress":
            self.outbox.send(
                oa.ConversationItemDoneEvent(previous_item_id=previous, item=item.to_event_item())
            )

    def add_user_audio(self, item_id: str) -> None:
        self._add(Item(id=item_id, role="user", text=None, audio=True, status="in_progress"))

    def set_transcript(self, item_id: str, transcript: str) -> None:
        for i, item in enumerate(self.items):
            if item.id == item_id:
                item.text, item.status = transcript, "completed"
                previous = self.items[i - 1].id if i else None
                self.outbox.send(
                    oa.ConversationItemDoneEvent(previous_item_id=previous, item=item.to_event_item())
                )
                return

    def add_message(self, event: oa.ConversationItemCreateEvent) -> None:
        item = event.item
        if item.type != "message":
            raise ConversationError(
                "unsupported_field", f"item type `{item.type}` is not supported", "item.type"
            )
        if event.previous_item_id is not None and event.previous_item_id != self.last_item_id:
            raise ConversationError(
                "unsupported_field", "items can only be appended at the end", "previous_item_id"
            )
        texts: list[str] = []
        for i, part in enumerate(item.content):
            if part.type not in ("input_text", "output_text", "text"):
                raise ConversationError(
                    "unsupported_field",
                    f"content type `{part.type}` is not supported",
                    f"item.content[{i}].type",
                )
            texts.append(part.text or "")
        item_id = item.id or oa.new_id("item")
        if any(it.id == item_id for it in self.items):
            raise ConversationError("invalid_value", f"an item with id `{item_id}` already exists", "item.id")
        self._add(Item(id=item_id, role=item.role, text="".join(texts)))

    # ---- responses ----

    def create_response(
        self, options: ResponseOptions, wait_for: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        if self.responding:
            raise ConversationError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.response_id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self.response_id = oa.new_id("resp")
        self._cancel_reason = "client_cancelled"
        self._task = asyncio.create_task(self._respond(self.response_id, options, wait_for))

    def cancel_response(self, reason: str = "client_cancelled") -> bool:
        if not self.responding or self._task is None:
            return False
        self._cancel_reason = reason
        self._task.cancel()
        return True

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self._cancel_reason = "client_cancelled"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _prompt(self, instructions: str, max_new: int) -> tuple[list[int], int]:
        history = [it for it in self.items if it.text]
        while True:
            messages = [{"role": "system", "content": instructions}] if instructions else []
            messages += [{"role": it.role, "content": it.text} for it in history]
            ids = encode_chat(self.engine.tokenizer, messages)
            room = self.engine.max_model_len - len(ids)
            if room >= min(max_new, MIN_REPLY_TOKENS) or len(history) <= 1:
                break
            history = history[1:]
        if room < 1:
            raise ConversationError(
                "context_length_exceeded", "the conversation does not fit the model's context"
            )
        return ids, min(max_new, room)

    async def _respond(
        self, resp_id: str, options: ResponseOptions, wait_for: Callable[[], Awaitable[None]] | None
    ) -> None:
        max_out: int | Literal["inf"] = options.max_output_tokens or "inf"
        response = oa.Response(
            id=resp_id, conversation_id=self.id, max_output_tokens=max_out, metadata=options.metadata
        )
        self.outbox.send(oa.ResponseCreatedEvent(response=response))
        item: Item | None = None
        text = ""
        usage = oa.ResponseUsage()
        status, details = "completed", oa.ResponseStatusDetails(type="completed")
        try:
            if wait_for is not None:
                await wait_for()
            ids, max_tokens = self._prompt(
                options.instructions, options.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
            )
            item = self._open_reply_item(resp_id)
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
            usage.input_tokens = usage.input_token_details.text_tokens = len(ids)
            request = GenerationRequest(prompt_token_ids=ids, params=params, priority=Priority.REALTIME)
            async for out in self.engine.generate(request):
                if out.text:
                    text += out.text
                    item.text = text
                    self.outbox.send(
                        oa.OutputTextDeltaEvent(response_id=resp_id, item_id=item.id, delta=out.text)
                    )
                usage.output_tokens = usage.output_token_details.text_tokens = out.completion_tokens
                if out.finish_reason == "length":
                    status = "incomplete"
                    details = oa.ResponseStatusDetails(type="incomplete", reason="max_output_tokens")
        except asyncio.CancelledError:
            status = "cancelled"
            details = oa.ResponseStatusDetails(type="cancelled", reason=self._cancel_reason)
            self._finish(resp_id, response, item, text, usage, status, details)
            raise
        except (ConversationError, InvalidParameter) as exc:
            status = "failed"
            details = oa.ResponseStatusDetails(
                type="failed",
                error={"type": "invalid_request_error", "code": exc.code, "message": exc.message},
            )
        except Exception as exc:
            log.exception("response generation failed")
            status = "failed"
            details = oa.ResponseStatusDetails(
                type="failed",
                error={"type": "server_error", "code": "generation_failed", "message": str(exc)},
            )
        self._finish(resp_id, response, item, text, usage, status, details)

    def _open_reply_item(self, resp_id: str) -> Item:
        """The assistant item a response streams into, announced as in progress."""
        item = Item(id=oa.new_id("item"), role="assistant", text="", status="in_progress")
        previous = self.last_item_id
        self.items.append(item)
        self.outbox.send(oa.OutputItemAddedEvent(response_id=resp_id, item=item.to_event_item()))
        self.outbox.send(oa.ConversationItemAddedEvent(previous_item_id=previous, item=item.to_event_item()))
        part = oa.ContentPart(type="text", text="")
        self.outbox.send(oa.ContentPartAddedEvent(response_id=resp_id, item_id=item.id, part=part))
        return item

    def _finish(
        self,
        resp_id: str,
        response: oa.Response,
        item: Item | None,
        text: str,
        usage: oa.ResponseUsage,
        status: str,
        details: oa.ResponseStatusDetails,
    ) -> None:
        usage.total_tokens = usage.input_tokens + usage.output_tokens
        if item is not None:
            item.text = text
            item.status = "completed" if status == "completed" else "incomplete"
            index = self.items.index(item) if item in self.items else 0
            previous = self.items[index - 1].id if index else None
            part = oa.ContentPart(type="text", text=text)
            self.outbox.send(oa.OutputTextDoneEvent(response_id=resp_id, item_id=item.id, text=text))
            self.outbox.send(oa.ContentPartDoneEvent(response_id=resp_id, item_id=item.id, part=part))
            self.outbox.send(oa.OutputItemDoneEvent(response_id=resp_id, item=item.to_event_item()))
            self.outbox.send(
                oa.ConversationItemDoneEvent(previous_item_id=previous, item=item.to_event_item())
            )
            response.output = [item.to_event_item()]
        response.status = status  # type: ignore[assignment]
        response.status_details = details
        response.usage = usage
        self.outbox.send(oa.ResponseDoneEvent(response=response))
