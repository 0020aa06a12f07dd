"""OpenAI's session object <-> SessionConfig: `session.update` applied, `session.created/updated` rendered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from audio.vad import VadParams
from engine.errors import InvalidParameter
from engine.interface import ASRModelInfo
from engine.tts.request import VoiceInfo
from engine.tts.voices import resolve_voice
from realtime import protocol_openai as oa
from realtime.session import (
    InputEncoding,
    SessionConfig,
    SessionMode,
    check_session_language,
    resolve_asr_model,
)

SUPPORTED_PCM_RATES = (16000, 24000)
LOGPROBS_INCLUDE = "item.input_audio_transcription.logprobs"
# OpenAI's token-billed transcription models: named, they select our default speech model and make the
# completed event's usage take the `tokens` form (whisper-1 and our own model names: `duration`).
TOKEN_USAGE_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-latest")
CONVERSATION_ONLY = ("model", "instructions", "max_output_tokens", "output_modalities")


def session_object(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """The session object of session.created / session.updated, shaped like the SDK's models."""
    audio_input = {
        "format": _format_object(config),
        "transcription": {"model": config.asr_model, "language": config.language, "prompt": config.prompt},
        "turn_detection": _turn_detection_object(config),
        "noise_reduction": None,
    }
    if config.mode == "transcription":
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {"input": audio_input},
            "include": _include(config),
        }
    return {
        "type": "realtime",
        "id": session_id,
        "object": "realtime.session",
        "model": config.llm_model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {"input": audio_input, "output": _output_object(config)},
        "max_output_tokens": config.max_output_tokens if config.max_output_tokens is not None else "inf",
        "tool_choice": "none",
        "tools": [],
        "include": _include(config),
    }


def _include(config: SessionConfig) -> list[str] | None:
    return [LOGPROBS_INCLUDE] if config.include_logprobs else None


def output_format_object(encoding: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if encoding == "pcm16" else {"type": f"audio/{encoding}"}


def _output_object(config: SessionConfig) -> dict[str, Any]:
    return {
        "format": output_format_object(config.output_encoding),
        "voice": config.voice,
        "speed": config.speed,
    }


def _format_object(config: SessionConfig) -> dict[str, Any]:
    if config.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": config.input_rate}
    return {"type": f"audio/{config.encoding}"}


def _turn_detection_object(config: SessionConfig) -> dict[str, Any] | None:
    if config.vad is None:
        return None
    turn_detection: dict[str, Any] = {
        "type": "server_vad",
        "threshold": config.vad.threshold,
        "prefix_padding_ms": config.vad.prefix_padding_ms,
        "silence_duration_ms": config.vad.silence_duration_ms,
    }
    if config.idle_timeout_ms is not None:
        turn_detection["idle_timeout_ms"] = config.idle_timeout_ms
    if config.mode == "conversation":
        turn_detection["create_response"] = config.create_response
        turn_detection["interrupt_response"] = config.interrupt_response
    return turn_detection


def apply_session_update(
    current: SessionConfig,
    update: oa.SessionConfig,
    asr_models: Mapping[str, ASRModelInfo],
    llm_name: str | None,
    started: bool,
    voices: Mapping[str, VoiceInfo] | None = None,
) -> SessionConfig:
    """A new SessionConfig with an OpenAI `session.update` applied (atomically: any error changes nothing).

    Raises InvalidParameter: code `unsupported_field` naming the fields we do not implement, `invalid_value`
    for values we cannot honour, `model_not_found` for a model we do not serve."""
    new = replace(current)
    if "type" in update.model_fields_set and update.type is not None:
        mode: SessionMode = "conversation" if update.type == "realtime" else "transcription"
        if mode != current.mode and started:
            raise InvalidParameter("session.type", "session.type cannot change once audio or items were sent")
        new.mode = mode
    unsupported = _unsupported(update, new.mode)
    if unsupported:
        raise InvalidParameter(
            unsupported[0],
            f"Not supported by this server: {', '.join(unsupported)}. Leave these fields out or null.",
            code="unsupported_field",
        )
    if new.mode == "conversation":
        _apply_conversation(new, update, llm_name)
        _apply_output(new, update, dict(voices or {}))
    if "include" in update.model_fields_set:
        new.include_logprobs = LOGPROBS_INCLUDE in (update.include or [])
    audio_input = update.audio.input if update.audio is not None else None
    if audio_input is not None:
        _apply_audio_input(new, current, audio_input, asr_models)
    if not new.asr_model:
        new.asr_model = resolve_asr_model(None, asr_models, "session.audio.input.transcription.model")
    return new


def _unsupported(update: oa.SessionConfig, mode: SessionMode) -> list[str]:
    unsupported = oa.unsupported_fields(update, "session")
    if mode == "transcription":
        unsupported += [f"session.{f}" for f in CONVERSATION_ONLY if getattr(update, f) is not None]
        output = update.audio.output if update.audio is not None else None
        if output is not None:  # spoken replies are for conversations: name each field given
            given = [k for k in output.model_fields_set if getattr(output, k) is not None]
            unsupported += [f"session.audio.output.{k}" for k in given] or ["session.audio.output"]
    if update.tools:
        unsupported.append("session.tools")
    if update.tool_choice not in (None, "none", "auto"):
        unsupported.append("session.tool_choice")
    if update.include and set(update.include) - {LOGPROBS_INCLUDE}:
        unsupported.append("session.include")
    if update.truncation not in (None, "auto", "disabled"):
        unsupported.append("session.truncation")
    if update.output_modalities is not None and set(update.output_modalities) - {"text", "audio"}:
        unsupported.append("session.output_modalities")
    audio_input = update.audio.input if update.audio is not None else None
    td = audio_input.turn_detection if audio_input is not None else None
    if td is not None and td.type not in (None, "server_vad"):
        unsupported.append("session.audio.input.turn_detection.type")
    return unsupported


def _apply_conversation(new: SessionConfig, update: oa.SessionConfig, llm_name: str | None) -> None:
    if update.model is not None and update.model != llm_name:
        raise InvalidParameter(
            "session.model",
            f"The model `{update.model}` does not exist. The served language model is `{llm_name}`",
            code="model_not_found",
        )
    if llm_name is None:
        raise InvalidParameter(
            "session.type",
            "this server has no language model loaded for conversations",
            code="model_not_found",
        )
    new.llm_model = llm_name
    if update.instructions is not None:
        new.instructions = update.instructions
    if "max_output_tokens" in update.model_fields_set:
        mot = update.max_output_tokens
        new.max_output_tokens = None if mot in (None, "inf") else int(mot)
        if new.max_output_tokens is not None and new.max_output_tokens < 1:
            raise InvalidParameter("session.max_output_tokens", "max_output_tokens must be at least 1")


def check_modalities(modalities: list[str], voices: Mapping[str, VoiceInfo], param: str) -> tuple[str, ...]:
    """`output_modalities` as given: ["text"] or ["audio"] (audio carries its transcript)."""
    if len(modalities) != 1:
        raise InvalidParameter(param, 'output_modalities must be ["text"] or ["audio"]')
    if modalities == ["audio"] and not voices:
        raise InvalidParameter(
            param, "this server runs no speech synthesis model (--tts)", code="model_not_found"
        )
    return tuple(modalities)


def output_voice(voice: str | oa.VoiceId | None, voices: Mapping[str, VoiceInfo], param: str) -> str:
    name = voice.id if isinstance(voice, oa.VoiceId) else voice
    try:
        return resolve_voice(name, dict(voices))
    except InvalidParameter as exc:
        raise InvalidParameter(param, exc.message, code=exc.code) from None


def output_encoding(fmt: oa.AudioFormat, param: str) -> InputEncoding:
    if fmt.type == "audio/pcm":
        if fmt.rate not in (None, 24000):
            raise InvalidParameter(f"{param}.rate", "audio/pcm output is 24000 Hz")
        return "pcm16"
    return "pcmu" if fmt.type == "audio/pcmu" else "pcma"


def _apply_output(new: SessionConfig, update: oa.SessionConfig, voices: Mapping[str, VoiceInfo]) -> None:
    if update.output_modalities is not None:
        new.output_modalities = check_modalities(
            update.output_modalities, voices, "session.output_modalities"
        )
    output = update.audio.output if update.audio is not None else None
    if output is not None:
        if output.format is not None:
            new.output_encoding = output_encoding(output.format, "session.audio.output.format")
        if output.voice is not None:
            new.voice = output_voice(output.voice, voices, "session.audio.output.voice")
        if output.speed is not None:
            new.speed = output.speed
    if "audio" in new.output_modalities and new.voice is None and voices:
        new.voice = next(iter(voices))


def _apply_audio_input(
    new: SessionConfig,
    current: SessionConfig,
    audio_input: oa.AudioInputConfig,
    asr_models: Mapping[str, ASRModelInfo],
) -> None:
    if audio_input.format is not None:
        fmt = audio_input.format
        if fmt.type == "audio/pcm":
            rate = fmt.rate if fmt.rate is not None else 24000
            if rate not in SUPPORTED_PCM_RATES:
                raise InvalidParameter(
                    "session.audio.input.format.rate",
                    f"Unsupported sample rate {rate} for audio/pcm; use 24000 or 16000",
                )
            new.encoding, new.input_rate = "pcm16", rate
        else:
            new.encoding = "pcmu" if fmt.type == "audio/pcmu" else "pcma"
            new.input_rate = 8000
    tr = audio_input.transcription
    if tr is not None:
        new.usage_tokens = tr.model in TOKEN_USAGE_MODELS
        model = None if new.usage_tokens else tr.model
        new.asr_model = resolve_asr_model(model, asr_models, "session.audio.input.transcription.model")
        check_session_language(
            asr_models, new.asr_model, tr.language, "session.audio.input.transcription.language"
        )
        new.language = tr.language
        new.prompt = tr.prompt
    if "turn_detection" in audio_input.model_fields_set:
        _apply_turn_detection(new, current, audio_input.turn_detection)


def _apply_turn_detection(
    new: SessionConfig, current: SessionConfig, td: oa.TurnDetectionConfig | None
) -> None:
    if td is None:
        new.vad = None
        return
    base = current.vad or VadParams()
    new.vad = VadParams(
        threshold=td.threshold if td.threshold is not None else base.threshold,
        prefix_padding_ms=td.prefix_padding_ms
        if td.prefix_padding_ms is not None
        else base.prefix_padding_ms,
        silence_duration_ms=(
            td.silence_duration_ms if td.silence_duration_ms is not None else base.silence_duration_ms
        ),
    )
    if "idle_timeout_ms" in td.model_fields_set:
        new.idle_timeout_ms = td.idle_timeout_ms
    if td.create_response is not None:
        new.create_response = td.create_response
    if td.interrupt_response is not None:
        new.interrupt_response = td.interrupt_response
