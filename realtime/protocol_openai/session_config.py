"""The client side of `session.update`: the session object's fields we read (others are reported by name)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from realtime.protocol_openai.common import ClientModel


class AudioFormat(ClientModel):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = None


class TranscriptionConfig(ClientModel):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class TurnDetectionConfig(ClientModel):
    type: str | None = None  # None: a partial update of the turn detection in place
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(default=None, ge=32, le=10000)
    idle_timeout_ms: int | None = Field(default=None, ge=5000, le=30000)
    create_response: bool | None = None
    interrupt_response: bool | None = None


class AudioInputConfig(ClientModel):
    format: AudioFormat | None = None
    transcription: TranscriptionConfig | None = None
    turn_detection: TurnDetectionConfig | None = None


class VoiceId(ClientModel):
    id: str


class AudioOutputConfig(ClientModel):
    format: AudioFormat | None = None
    voice: str | VoiceId | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


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
