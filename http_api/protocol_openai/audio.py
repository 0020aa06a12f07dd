"""POST /v1/audio/transcriptions and /translations: the form fields and every response shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from http_api.errors import bad_request, unsupported
from http_api.protocol_openai.common import ResponseModel

AudioResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class TranscriptionForm(BaseModel):
    """The non-file fields of /v1/audio/transcriptions and /translations (multipart, so all strings)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: AudioResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=list)
    stream: bool = False
    include: list[str] = Field(default_factory=list)
    chunking_strategy: str | None = None

    def check_supported(self) -> None:
        if "word" in self.timestamp_granularities:
            raise unsupported("timestamp_granularities", "only 'segment' timestamps are available")
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise bad_request(
                "timestamp_granularities requires response_format 'verbose_json'",
                param="timestamp_granularities",
            )
        if self.include:
            raise unsupported("include", "token logprobs are not returned for audio")
        if self.chunking_strategy is not None:
            raise unsupported("chunking_strategy", "long audio is always split into 30 s windows")
        if self.stream and self.response_format not in ("json", "text"):
            raise bad_request(
                f"stream=true is only available with response_format 'json' or 'text', not "
                f"'{self.response_format}'",
                param="stream",
            )


class DurationUsage(ResponseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJSON(ResponseModel):
    text: str
    usage: DurationUsage


class VerboseSegment(ResponseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    # Whisper's confidence figures for the window the segment was decoded in (null if unknown).
    avg_logprob: float | None = None
    compression_ratio: float
    no_speech_prob: float | None = None


class TranscriptionVerboseJSON(ResponseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    usage: DurationUsage


class TranscriptTextDelta(ResponseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextDone(ResponseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str
