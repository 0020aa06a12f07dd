"""Conversation items and the server events about them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from realtime.protocol_openai.common import ServerEvent


class ContentPart(BaseModel):
    type: str
    text: str | None = None
    transcript: str | None = None
    audio: str | None = None


class MessageItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    role: Literal["user", "assistant", "system"]
    content: list[ContentPart]


class ConversationItemAddedEvent(ServerEvent):
    type: Literal["conversation.item.added"] = "conversation.item.added"
    previous_item_id: str | None = None
    item: MessageItem


class ConversationItemDoneEvent(ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    previous_item_id: str | None = None
    item: MessageItem


class ConversationItemRetrievedEvent(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: MessageItem


class ConversationItemDeletedEvent(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncatedEvent(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int
