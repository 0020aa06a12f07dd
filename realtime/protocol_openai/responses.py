"""Responses: the response object, its usage and status, and the events that stream it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from realtime.protocol_openai.common import ServerEvent
from realtime.protocol_openai.items import ContentPart, MessageItem


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
    audio: dict[str, Any] | None = None
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


class ContentEvent(ServerEvent):
    """The fields every event about one content part of a response's output item carries."""

    type: str
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ContentPartAddedEvent(ContentEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: ContentPart


class ContentPartDoneEvent(ContentEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: ContentPart


class OutputTextDeltaEvent(ContentEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class OutputTextDoneEvent(ContentEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class OutputAudioTranscriptDeltaEvent(ContentEvent):
    type: Literal["response.output_audio_transcript.delta"] = "response.output_audio_transcript.delta"
    delta: str


class OutputAudioTranscriptDoneEvent(ContentEvent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str


class OutputAudioDeltaEvent(ContentEvent):
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str  # base64 audio in the session's output format


class OutputAudioDoneEvent(ContentEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"
