"""OpenAI's session object <-> SessionConfig: `session.update` applied, `session.created/updated` rendered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from audio.vad import VadParams
from engine.errors import InvalidParameter
from engine.interface import ASRModelInfo
from realtime import protocol_openai as oa
from realtime.session import SessionConfig, SessionMode, check_session_language, resolve_asr_model

SUPPORTED_PCM_RATES = (16000, 24000)
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
            "include": None,
        }
    return {
        "type": "realtime",
        "id": session_id,
        "object": "realtime.session",
        "model": config.llm_model,
        "output_modalities": ["text"],
        "instructions": config.instructions,
        "audio": {"input": audio_input},
        "max_output_tokens": config.max_output_tokens if config.max_output_tokens is not None else "inf",
        "tool_choice": "none",
        "tools": [],
        "include": None,
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
        new.asr_model = resolve_asr_model(tr.model, asr_models, "session.audio.input.transcription.model")
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
    if td.create_response is not None:
        new.create_response = td.create_response
    if td.interrupt_response is not None:
        new.interrupt_response = td.interrupt_response
