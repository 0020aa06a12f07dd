"""Per-session configuration and the server-wide realtime limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from audio.vad import VadParams

SessionMode = Literal["transcription", "conversation"]
InputEncoding = Literal["pcm16", "pcmu", "pcma"]

SUPPORTED_PCM_RATES = (16000, 24000)
MIN_COMMIT_SECONDS = 0.1  # like OpenAI's input_audio_buffer_commit_empty


@dataclass
class RealtimeLimits:
    max_sessions: int = 64
    max_session_seconds: float = 3600.0
    session_idle_timeout: float = 120.0  # seconds without a client message
    max_buffered_audio_seconds: float = 120.0  # audio held for the current turn / uncommitted buffer
    max_message_bytes: int = 16 * 1024 * 1024  # a WebSocket frame larger than this closes with 1009

    @classmethod
    def from_settings(cls, settings: Any | None) -> RealtimeLimits:
        """Read the limits off the HTTP layer's ServerSettings; missing attributes keep the defaults."""
        limits = cls()
        if settings is None:
            return limits
        for name in ("max_sessions", "max_session_seconds", "session_idle_timeout", "max_buffered_audio_seconds"):
            value = getattr(settings, name, None)
            if value is not None:
                setattr(limits, name, type(getattr(limits, name))(value))
        return limits


@dataclass
class StreamingSettings:
    """How live speech is re-decoded. Tunable per server (the bench changes them)."""

    partial_interval_s: float = 0.5  # re-decode the growing turn after this much new audio
    min_partial_audio_s: float = 1.0  # no partial decode of less audio than this
    max_window_s: float = 24.0  # past this the window slides (stable text is committed and dropped)
    prompt_chars: int = 400  # prior text fed to Whisper as its prompt


@dataclass
class SessionConfig:
    mode: SessionMode = "transcription"
    asr_model: str = ""
    language: str | None = None
    prompt: str | None = None  # user-given transcription prompt
    encoding: InputEncoding = "pcm16"
    input_rate: int = 24000
    vad: VadParams | None = field(default_factory=VadParams)  # None: the client commits turns
    create_response: bool = True
    interrupt_response: bool = True
    llm_model: str | None = None
    instructions: str = "You are a helpful voice assistant. Answer in one or two short sentences."
    max_output_tokens: int | None = None  # None: "inf" (bounded by the context length)

    def to_openai(self, session_id: str) -> dict[str, Any]:
        """The session object of session.created / session.updated, shaped like the SDK's models."""
        if self.encoding == "pcm16":
            fmt: dict[str, Any] = {"type": "audio/pcm", "rate": self.input_rate}
        else:
            fmt = {"type": f"audio/{self.encoding}"}
        turn_detection: dict[str, Any] | None = None
        if self.vad is not None:
            turn_detection = {
                "type": "server_vad",
                "threshold": self.vad.threshold,
                "prefix_padding_ms": self.vad.prefix_padding_ms,
                "silence_duration_ms": self.vad.silence_duration_ms,
            }
            if self.mode == "conversation":
                turn_detection["create_response"] = self.create_response
                turn_detection["interrupt_response"] = self.interrupt_response
        audio_input = {
            "format": fmt,
            "transcription": {"model": self.asr_model, "language": self.language, "prompt": self.prompt},
            "turn_detection": turn_detection,
            "noise_reduction": None,
        }
        if self.mode == "transcription":
            return {
                "type": "transcription",
                "id": session_id,
                "object": "realtime.transcription_session",
                "audio": {"input": audio_input},
                "include": None,
            }
        return {
            "type": "realtime",
            "id": session_id,
            "object": "realtime.session",
            "model": self.llm_model,
            "output_modalities": ["text"],
            "instructions": self.instructions,
            "audio": {"input": audio_input},
            "max_output_tokens": self.max_output_tokens if self.max_output_tokens is not None else "inf",
            "tool_choice": "none",
            "tools": [],
            "include": None,
        }
