"""vLLM's Realtime API dialect (vllm/entrypoints/openai/realtime/protocol.py), field for field.

Flow: server `session.created` {id, created}; client `session.update` {model};
`input_audio_buffer.commit` {final: false} starts streaming; `input_audio_buffer.append` {audio: base64
PCM16 16 kHz mono}; server `transcription.delta` {delta}; client `input_audio_buffer.commit` {final: true}
ends the input and the server answers `transcription.done` {text, usage}. Errors: `error` {error, code}.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WIRE_SAMPLE_RATE = 16000  # the dialect's wire format: PCM16 mono at 16 kHz


class VllmModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# Client -> server


class SessionUpdate(VllmModel):
    type: Literal["session.update"] = "session.update"
    model: str | None = None


class InputAudioBufferAppend(VllmModel):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str  # base64 PCM16 @ 16 kHz mono


class InputAudioBufferCommit(VllmModel):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"
    final: bool = False


CLIENT_EVENTS: dict[str, type[VllmModel]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit,
}

ClientEvent = SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit


# Server -> client


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: dict | None = None


class SessionCreated(BaseModel):
    type: Literal["session.created"] = "session.created"
    id: str = Field(default_factory=lambda: f"sess-{uuid.uuid4().hex}")
    created: int = Field(default_factory=lambda: int(time.time()))


class TranscriptionDelta(BaseModel):
    type: Literal["transcription.delta"] = "transcription.delta"
    delta: str


class TranscriptionDone(BaseModel):
    type: Literal["transcription.done"] = "transcription.done"
    text: str
    usage: UsageInfo | None = None


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    error: str
    code: str | None = None
