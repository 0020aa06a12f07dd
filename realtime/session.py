"""Per-session configuration and the server-wide realtime limits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from audio.vad import VadParams
from engine.request import TRIM_MIN_S
from realtime.protocol_openai import SessionConfig as OpenAISessionConfig
from realtime.protocol_openai import unsupported_fields

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
        for name in (
            "max_sessions",
            "max_session_seconds",
            "session_idle_timeout",
            "max_buffered_audio_seconds",
        ):
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
    # Least Whisper encoder context per decode, in seconds (the turn's audio plus 1 s of silence when
    # longer); the encoder's cost is proportional to it. Less than the default 10 s makes each decode
    # cheaper on a CPU, but costs accuracy on some sentences ("the train to Boston" -> "the train
    # debossed" at 6 s and below), and LocalAgreement cannot undo a misheard word two partials agreed
    # on, so both stay at the engine's default (see TRIM_MIN_S in engine/whisper_runner.py).
    min_encoder_context_s: float = TRIM_MIN_S
    partial_min_encoder_context_s: float = TRIM_MIN_S
    # Load shedding: no new partial while the engine already has this many Whisper windows queued or
    # decoding (finals are never skipped), so end-of-turn decodes do not queue behind partials.
    partial_max_engine_windows: int = 8
    # Start every session's due partials together on a shared clock so the engine decodes them as one
    # batch (see realtime/partial_ticker.py); adds up to one interval of partial latency.
    align_partials: bool = False


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


class SessionUpdateError(ValueError):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def resolve_asr_model(name: str | None, asr_models: dict[str, Any], param: str) -> str:
    """An ASR model name served by the engine; None (or OpenAI's `whisper-1`) picks the first one."""
    if not asr_models:
        raise SessionUpdateError(
            "model_not_found", "this server has no speech recognition model loaded", param
        )
    if name is None or name == "whisper-1":
        return next(iter(asr_models))
    if name not in asr_models:
        raise SessionUpdateError(
            "model_not_found",
            f"The model `{name}` does not exist. Available speech models: {', '.join(asr_models)}",
            param,
        )
    return name


def apply_openai_update(
    current: SessionConfig,
    update: OpenAISessionConfig,
    asr_models: dict[str, Any],
    llm_name: str | None,
    started: bool,
) -> SessionConfig:
    """A new SessionConfig with an OpenAI `session.update` applied (atomically: any error changes nothing).

    Fields we do not implement raise `unsupported_field`
    naming them; values we cannot honour raise `invalid_value`.
    """
    unsupported = unsupported_fields(update, "session")
    new = replace(current)
    fields = update.model_fields_set
    if "type" in fields and update.type is not None:
        mode: SessionMode = "conversation" if update.type == "realtime" else "transcription"
        if mode != current.mode and started:
            raise SessionUpdateError(
                "invalid_value", "session.type cannot change once audio or items were sent", "session.type"
            )
        new.mode = mode
    conversation_only = ("model", "instructions", "max_output_tokens", "output_modalities")
    if new.mode == "transcription":
        unsupported += [f"session.{f}" for f in conversation_only if getattr(update, f) is not None]
    if update.tools:
        unsupported.append("session.tools")
    if update.tool_choice not in (None, "none", "auto"):
        unsupported.append("session.tool_choice")
    if update.include:
        unsupported.append("session.include")
    if update.truncation not in (None, "auto", "disabled"):
        unsupported.append("session.truncation")
    if update.output_modalities is not None and set(update.output_modalities) - {"text"}:
        unsupported.append("session.output_modalities")
    audio_input = update.audio.input if update.audio is not None else None
    td = audio_input.turn_detection if audio_input is not None else None
    if td is not None and td.type != "server_vad":
        unsupported.append("session.audio.input.turn_detection.type")
    if unsupported:
        raise SessionUpdateError(
            "unsupported_field",
            f"Not supported by this server: {', '.join(unsupported)}. Leave these fields out or null.",
            unsupported[0],
        )

    if new.mode == "conversation":
        if update.model is not None and update.model != llm_name:
            raise SessionUpdateError(
                "model_not_found",
                f"The model `{update.model}` does not exist. The served language model is `{llm_name}`",
                "session.model",
            )
        if llm_name is None:
            raise SessionUpdateError(
                "model_not_found",
                "this server has no language model loaded for conversations",
                "session.type",
            )
        new.llm_model = llm_name
        if update.instructions is not None:
            new.instructions = update.instructions
        if "max_output_tokens" in fields:
            mot = update.max_output_tokens
            new.max_output_tokens = None if mot in (None, "inf") else int(mot)
            if new.max_output_tokens is not None and new.max_output_tokens < 1:
                raise SessionUpdateError(
                    "invalid_value", "max_output_tokens must be at least 1", "session.max_output_tokens"
                )

    if audio_input is not None:
        if audio_input.format is not None:
            fmt = audio_input.format
            if fmt.type == "audio/pcm":
                rate = fmt.rate if fmt.rate is not None else 24000
                if rate not in SUPPORTED_PCM_RATES:
                    raise SessionUpdateError(
                        "invalid_value",
                        f"Unsupported sample rate {rate} for audio/pcm; use 24000 or 16000",
                        "session.audio.input.format.rate",
                    )
                new.encoding, new.input_rate = "pcm16", rate
            else:
                new.encoding = "pcmu" if fmt.type == "audio/pcmu" else "pcma"
                new.input_rate = 8000
        tr = audio_input.transcription
        if tr is not None:
            param = "session.audio.input.transcription.model"
            new.asr_model = resolve_asr_model(tr.model, asr_models, param)
            info = asr_models[new.asr_model]
            if tr.language is not None and not getattr(info, "multilingual", True) and tr.language != "en":
                raise SessionUpdateError(
                    "invalid_value",
                    f"`{new.asr_model}` is English-only; language `{tr.language}` is not available",
                    "session.audio.input.transcription.language",
                )
            new.language = tr.language
            new.prompt = tr.prompt
        if "turn_detection" in audio_input.model_fields_set:
            if td is None:
                new.vad = None
            else:
                base = current.vad or VadParams()
                new.vad = VadParams(
                    threshold=td.threshold if td.threshold is not None else base.threshold,
                    prefix_padding_ms=(
                        td.prefix_padding_ms if td.prefix_padding_ms is not None else base.prefix_padding_ms
                    ),
                    silence_duration_ms=(
                        td.silence_duration_ms
                        if td.silence_duration_ms is not None
                        else base.silence_duration_ms
                    ),
                )
                if td.create_response is not None:
                    new.create_response = td.create_response
                if td.interrupt_response is not None:
                    new.interrupt_response = td.interrupt_response
    if not new.asr_model:
        new.asr_model = resolve_asr_model(None, asr_models, "session.audio.input.transcription.model")
    return new
