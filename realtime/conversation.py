"""Conversation mode: user turns become items, the LLM answers with streamed text or speech (realtime/reply.py).

The item history is the model's context; when it no longer fits `engine.max_model_len` the oldest items
are dropped first. One response runs at a time. Cancelling its task (response.cancel, barge-in, or the
socket closing) aborts the engine request; the response still ends with `response.done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

__all__ = ["Conversation", "ConversationError", "Item", "ResponseOptions"]

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from engine.llm.chat import encode_chat
from realtime import protocol_openai as oa
from realtime.outbox import Outbox
from realtime.reply import Item, ReplyStream, ResponseOptions

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_TOKENS = 512  # what "inf" means here: small models ramble
MIN_REPLY_TOKENS = 64  # drop old items until at least this much room is left for the answer


class ConversationError(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


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

    def _find(self, item_id: str) -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise ConversationError(
            "item_not_found", f"Conversation item with id '{item_id}' does not exist", "item_id"
        )

    def retrieve(self, item_id: str) -> None:
        self.outbox.send(oa.ConversationItemRetrievedEvent(item=self._find(item_id).to_event_item()))

    def delete(self, item_id: str) -> None:
        item = self._find(item_id)
        if item.status == "in_progress":
            raise ConversationError(
                "item_in_progress", f"Item '{item_id}' is still in progress and cannot be deleted", "item_id"
            )
        self.items.remove(item)
        self.outbox.send(oa.ConversationItemDeletedEvent(item_id=item_id))

    def truncate(self, event: oa.ConversationItemTruncateEvent) -> None:
        """Cut an assistant item's audio, and its transcript, to what the client played."""
        item = self._find(event.item_id)
        spoken = item.spoken
        if item.role != "assistant" or spoken is None:
            raise ConversationError(
                "invalid_value", "Only assistant messages with audio can be truncated", "item_id"
            )
        if event.content_index != 0:
            raise ConversationError(
                "invalid_value",
                f"Item '{item.id}' has no content part {event.content_index}",
                "content_index",
            )
        if event.audio_end_ms > spoken.ms:
            raise ConversationError(
                "invalid_value",
                f"audio_end_ms ({event.audio_end_ms}) is past the end of the item's audio ({spoken.ms} ms)",
                "audio_end_ms",
            )
        if item.status == "in_progress":  # the client stopped playback before the reply ended
            self.cancel_response("client_cancelled")
        item.text = spoken.heard_text(item.text or "", event.audio_end_ms)
        spoken.truncate(event.audio_end_ms)
        item.truncated = True
        self.outbox.send(
            oa.ConversationItemTruncatedEvent(
                item_id=item.id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
            )
        )

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
        if self._task.cancelling():  # already being cancelled: keep the first reason
            return True
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
            id=resp_id,
            conversation_id=self.id,
            max_output_tokens=max_out,
            metadata=options.metadata,
            output_modalities=list(options.modalities),
            audio=options.audio_object(),
        )
        self.outbox.send(oa.ResponseCreatedEvent(response=response))
        reply: ReplyStream | None = None
        usage = oa.ResponseUsage()
        status, details = "completed", oa.ResponseStatusDetails(type="completed")
        try:
            if wait_for is not None:
                await wait_for()
            ids, max_tokens = self._prompt(
                options.instructions, options.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
            )
            usage.input_tokens = usage.input_token_details.text_tokens = len(ids)
            reply = ReplyStream(self.engine, self.outbox, resp_id, self._open_reply_item(resp_id), options)
            if await reply.run(ids, max_tokens, usage):
                status = "incomplete"
                details = oa.ResponseStatusDetails(type="incomplete", reason="max_output_tokens")
        except asyncio.CancelledError:
            if reply is not None:
                reply.stop()
            details = oa.ResponseStatusDetails(type="cancelled", reason=self._cancel_reason)
            self._finish(response, reply, usage, "cancelled", details)
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
        if reply is not None and status != "completed":
            reply.stop()
        self._finish(response, reply, usage, status, details)

    def _open_reply_item(self, resp_id: str) -> Item:
        """The assistant item a response streams into, announced as in progress."""
        item = Item(id=oa.new_id("item"), role="assistant", text="", status="in_progress")
        previous = self.last_item_id
        self.items.append(item)
        self.outbox.send(oa.OutputItemAddedEvent(response_id=resp_id, item=item.to_event_item()))
        self.outbox.send(oa.ConversationItemAddedEvent(previous_item_id=previous, item=item.to_event_item()))
        return item

    def _finish(
        self,
        response: oa.Response,
        reply: ReplyStream | None,
        usage: oa.ResponseUsage,
        status: str,
        details: oa.ResponseStatusDetails,
    ) -> None:
        if reply is not None:
            item = reply.item
            reply.close(usage)
            item.status = "completed" if status == "completed" else "incomplete"
            index = self.items.index(item) if item in self.items else 0
            previous = self.items[index - 1].id if index else None
            self.outbox.send(oa.OutputItemDoneEvent(response_id=response.id, item=item.to_event_item()))
            self.outbox.send(
                oa.ConversationItemDoneEvent(previous_item_id=previous, item=item.to_event_item())
            )
            response.output = [item.to_event_item()]
        details_out = usage.output_token_details
        usage.output_tokens = details_out.text_tokens + details_out.audio_tokens
        usage.total_tokens = usage.input_tokens + usage.output_tokens
        response.status = status  # type: ignore[assignment]
        response.status_details = details
        response.usage = usage
        self.outbox.send(oa.ResponseDoneEvent(response=response))
