"""Client events: what `openai` SDK's realtime connection sends."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realtime.protocol_openai.common import ClientModel
from realtime.protocol_openai.session_config import AudioFormat, SessionConfig, VoiceId


class SessionUpdateEvent(ClientModel):
    type: Literal["session.update"]
    event_id: str | None = None
    session: SessionConfig


class InputAudioBufferAppendEvent(ClientModel):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class InputAudioBufferCommitEvent(ClientModel):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class InputAudioBufferClearEvent(ClientModel):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


class ContentPartIn(ClientModel):
    type: str
    text: str | None = None
    transcript: str | None = None


class MessageItemIn(ClientModel):
    type: str = "message"
    id: str | None = None
    object: str | None = None
    status: str | None = None
    role: Literal["user", "assistant", "system"]
    content: list[ContentPartIn]


class ConversationItemCreateEvent(ClientModel):
    type: Literal["conversation.item.create"]
    event_id: str | None = None
    previous_item_id: str | None = None
    item: MessageItemIn


class ResponseAudioOutput(ClientModel):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None


class ResponseAudio(ClientModel):
    output: ResponseAudioOutput | None = None


class ResponseParams(ClientModel):
    audio: ResponseAudio | None = None
    instructions: str | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    metadata: dict[str, str] | None = None
    output_modalities: list[str] | None = None
    conversation: str | None = None


class ResponseCreateEvent(ClientModel):
    type: Literal["response.create"]
    event_id: str | None = None
    response: ResponseParams | None = None


class ResponseCancelEvent(ClientModel):
    type: Literal["response.cancel"]
    event_id: str | None = None
    response_id: str | None = None


class ConversationItemTruncateEvent(ClientModel):
    type: Literal["conversation.item.truncate"]
    event_id: str | None = None
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ConversationItemRetrieveEvent(ClientModel):
    type: Literal["conversation.item.retrieve"]
    event_id: str | None = None
    item_id: str


class ConversationItemDeleteEvent(ClientModel):
    type: Literal["conversation.item.delete"]
    event_id: str | None = None
    item_id: str


CLIENT_EVENTS: dict[str, type[ClientModel]] = {
    "session.update": SessionUpdateEvent,
    "input_audio_buffer.append": InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": InputAudioBufferClearEvent,
    "conversation.item.create": ConversationItemCreateEvent,
    "response.create": ResponseCreateEvent,
    "response.cancel": ResponseCancelEvent,
    "conversation.item.truncate": ConversationItemTruncateEvent,
    "conversation.item.retrieve": ConversationItemRetrieveEvent,
    "conversation.item.delete": ConversationItemDeleteEvent,
}

# Known to the SDK but not implemented here: answered with an `unsupported_event` error naming them.
UNSUPPORTED_CLIENT_EVENTS = frozenset(
    {
        "output_audio_buffer.clear",
    }
)

ClientEvent = (
    SessionUpdateEvent
    | InputAudioBufferAppendEvent
    | InputAudioBufferCommitEvent
    | InputAudioBufferClearEvent
    | ConversationItemCreateEvent
    | ResponseCreateEvent
    | ResponseCancelEvent
    | ConversationItemTruncateEvent
    | ConversationItemRetrieveEvent
    | ConversationItemDeleteEvent
)
