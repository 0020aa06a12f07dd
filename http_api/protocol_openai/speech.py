"""POST /v1/audio/speech: the request body and the SSE events (openai/types/audio/speech_create_params.py;
the speech.audio.* events of OpenAI's API reference)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from http_api.protocol_openai.common import ResponseModel
from http_api.speech_encoding import SpeechFormat

MAX_INPUT_CHARS = 4096  # as OpenAI
# OpenAI's TTS model names: accepted and served by our voices, as the voice names are (engine/tts/voices.py).
OPENAI_SPEECH_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"})


class CustomVoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str


class SpeechCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str
    voice: str | CustomVoice
    # Accepted and ignored: a Piper voice has no instruction-following (OpenAI's tts-1 ignores it too).
    instructions: str | None = None
    response_format: SpeechFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] = "audio"

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, CustomVoice) else self.voice


class SpeechAudioDelta(ResponseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str  # base64 of the next bytes of the response_format file


class SpeechUsage(ResponseModel):
    input_tokens: int  # characters of input spoken
    output_tokens: int  # audio made, in 20 ms frames
    total_tokens: int


class SpeechAudioDone(ResponseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage
