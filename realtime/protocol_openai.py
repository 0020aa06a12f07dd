"""OpenAI's GA Realtime API dialect: the events `openai` SDK's `client.realtime.connect()` speaks.

Client models accept unknown keys (`extra="allow"`) so that a field we do not implement can be reported
by name (`unsupported_fields`) instead of being ignored or failing with a generic validation error.
Server models mirror `openai.types.realtime.*` field for field; every server event carries an event_id.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class ClientModel(BaseModel):
    model_config = ConfigDict(extra="allow")


def unsupported_fields(model: BaseModel, prefix: str) -> list[str]:
    """Dotted names of keys we do not implement that were given a non-null value, nested models included."""
    names: list[str] = []
    for key, value in (model.model_extra or {}).items():
        if value is not None:
            names.append(f"{prefix}.{key}")
    for key in model.model_fields_set:
        value = getattr(model, key)
        if isinstance(value, ClientModel):
            names.extend(unsupported_fields(value, f"{prefix}.{key}"))
        elif isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, ClientModel):
                    names.extend(unsupported_fields(entry, f"{prefix}.{key}[{i}]"))
    return names


# ---- Session configuration (client side of session.update) ----


class AudioFormat(ClientModel):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TranscriptionConfig(ClientModel):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class TurnDetectionConfig(ClientModel):
    type: str = "server_vad"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(default=None, ge=32, le=10000)
    create_response: bool | None = None
    interrupt_response: bool | None = None


class AudioInputConfig(ClientModel):
    format: AudioFormat | None = None
    transcription: TranscriptionConfig | None = None
    turn_detection: TurnDetectionConfig | None = None


class AudioOutputConfig(ClientModel):
    pass


class AudioConfig(ClientModel):
    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None


class SessionConfig(ClientModel):
    type: Literal["transcription", "realtime"] | None = None
    model: str | None = None
    instructions: str | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    output_modalities: list[str] | None = None
    audio: AudioConfig | None = None
    tool_choice: str | None = None
    tools: list[Any] | None = None
    include: list[str] | None = None
    truncation: str | None = None


# ---- Client events ----


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


class ResponseParams(ClientModel):
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


CLIENT_EVENTS: dict[str, type[ClientModel]] = {
    "session.update": SessionUpdateEvent,
    "input_audio_buffer.append": InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": InputAudioBufferClearEvent,
    "conversation.item.create": ConversationItemCreateEvent,
    "response.create": ResponseCreateEvent,
    "response.cancel": ResponseCancelEvent,
}

# Known to the SDK but not implemented here: answered with an `unsupported_event` error naming them.
UNSUPPORTED_CLIENT_EVENTS = frozenset(
    {
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
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
)


# ---- Server events ----


class ServerEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: new_id("event"))


class ErrorDetail(BaseModel):
    type: str = "invalid_request_error"
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SessionCreatedEvent(ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdatedEvent(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any]


class SpeechStartedEvent(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStoppedEvent(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class CommittedEvent(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class ClearedEvent(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class TranscriptionDeltaEvent(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionUsageDuration(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionCompletedEvent(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: TranscriptionUsageDuration


class TranscriptionFailedEvent(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: ErrorDetail


class ContentPart(BaseModel):
    type: str
    text: str | None = None
    transcript: str | None = None


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


class InputTokenDetails(BaseModel):
    text_tokens: int = 0
    audio_tokens: int = 0
    cached_tokens: int = 0


class OutputTokenDetails(BaseModel):
    text_tokens: int = 0
    audio_tokens: int = 0


class ResponseUsage(BaseModel):
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_token_details: InputTokenDetails = Field(default_factory=InputTokenDetails)
    output_token_details: OutputTokenDetails = Field(default_factory=OutputTokenDetails)


class ResponseStatusDetails(BaseModel):
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: str | None = None
    error: dict[str, Any] | None = None


class Response(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["completed", "cancelled", "failed", "incomplete", "in_progress"] = "in_progress"
    status_details: ResponseStatusDetails | None = None
    output: list[MessageItem] = Field(default_factory=list)
    conversation_id: str | None = None
    output_modalities: list[str] = Field(default_factory=lambda: ["text"])
    max_output_tokens: int | Literal["inf"] = "inf"
    metadata: dict[str, str] | None = None
    usage: ResponseUsage | None = None


class ResponseCreatedEvent(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseDoneEvent(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: Response


class OutputItemAddedEvent(ServerEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    output_index: int = 0
    item: MessageItem


class OutputItemDoneEvent(ServerEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    output_index: int = 0
    item: MessageItem


class ContentPartAddedEvent(ServerEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    part: ContentPart


class ContentPartDoneEvent(ServerEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    part: ContentPart


class OutputTextDeltaEvent(ServerEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    delta: str


class OutputTextDoneEvent(ServerEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    text: str
