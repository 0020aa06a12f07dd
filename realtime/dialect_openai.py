"""OpenAI's GA realtime dialect: its events (realtime/protocol_openai.py) to session calls, results to events.

A transcription session streams each turn's transcript; a conversation ("realtime") session also keeps
the conversation's items and answers with text responses (realtime/conversation.py). Session settings
translate through realtime/openai_session.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from realtime import protocol_openai as oa
from realtime.audio_input import AudioPayloadError, TurnMode
from realtime.conversation import Conversation, ConversationError, ResponseOptions
from realtime.dialect import Dialect, InboundError, validate_event
from realtime.openai_session import apply_session_update, session_object
from realtime.outbox import Outbox
from realtime.session import SessionConfig, SessionMode, StreamingSettings
from realtime.transcriber import TurnTranscriber

AUDIO_EVENTS = (
    oa.SessionUpdateEvent,
    oa.InputAudioBufferAppendEvent,
    oa.InputAudioBufferCommitEvent,
    oa.InputAudioBufferClearEvent,
)


def error_event(
    code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
) -> oa.ErrorEvent:
    detail = oa.ErrorDetail(
        type=kind or "invalid_request_error", code=code, message=message, param=param, event_id=event_id
    )
    return oa.ErrorEvent(error=detail)


def turn_mode(config: SessionConfig) -> TurnMode:
    return "vad" if config.vad is not None else "manual"


def initial_config(engine: EngineClient, mode: SessionMode, query_model: str | None) -> SessionConfig:
    """The session before any session.update: the first speech model (or the one the URL named)."""
    config = SessionConfig(mode=mode, asr_model=next(iter(engine.asr_models), ""))
    if mode == "conversation":
        config.llm_model = engine.llm_name
    elif query_model and query_model in engine.asr_models:
        config.asr_model = query_model
    return config


class OpenAIDialect(Dialect):
    def __init__(
        self,
        session_id: str,
        outbox: Outbox,
        engine: EngineClient,
        streaming: StreamingSettings,
        config: SessionConfig,
    ) -> None:
        super().__init__(session_id, outbox, engine, streaming, config, turn_mode(config))
        self.conversation = Conversation(engine, outbox, oa.new_id("conv"))
        self.started = False  # any audio or item sent (session.type is then fixed)
        self.transcription_items: list[str] = []

    def session_created(self) -> None:
        self.outbox.send(oa.SessionCreatedEvent(session=session_object(self.config, self.session_id)))

    def parse(self, event_type: str, data: dict[str, Any], event_id: str | None) -> BaseModel:
        model = oa.CLIENT_EVENTS.get(event_type)
        if event_type == "session.update" and "session" not in data and "model" in data:
            return InboundError(
                code="invalid_value",
                message="This session speaks OpenAI's dialect: `session.update` takes a `session` object, "
                "not vLLM's flat `model` (connect without ?intent or ?model to speak vLLM's)",
                param="session",
                event_id=event_id,
            )
        if model is not None:
            return validate_event(model, data, event_id)
        if event_type in oa.UNSUPPORTED_CLIENT_EVENTS:
            return InboundError(
                code="unsupported_event",
                message=f"The event type `{event_type}` is not supported by this server",
                param="type",
                event_id=event_id,
            )
        return InboundError(
            code="invalid_event_type",
            message=f"Unknown event type: {event_type}",
            param="type",
            event_id=event_id,
        )

    def error_event(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> BaseModel:
        return error_event(code, message, param, event_id, kind)

    async def flush(self) -> None:
        self.conversation.cancel_response("client_cancelled")
        await super().flush()

    async def close(self) -> None:
        await super().close()
        await self.conversation.close()

    # ---- client events ----

    def handle(self, event: BaseModel) -> None:
        event_id = getattr(event, "event_id", None)
        if isinstance(event, oa.SessionUpdateEvent):  # the session's own fields are checked on apply
            unsupported = [key for key, value in (event.model_extra or {}).items() if value is not None]
        else:
            unsupported = [name.lstrip(".") for name in oa.unsupported_fields(event, "")]
        if unsupported:
            self.error(
                "unsupported_field",
                f"Not supported by this server: {', '.join(unsupported)}. Leave these fields out or null.",
                unsupported[0],
                event_id,
            )
        elif isinstance(event, oa.SessionUpdateEvent):
            self._session_update(event)
        elif isinstance(event, oa.InputAudioBufferAppendEvent):
            self._append(event.audio, event_id)
        elif isinstance(event, oa.InputAudioBufferCommitEvent):
            error = self.audio.commit()
            if error:
                self.error("input_audio_buffer_commit_empty", error, None, event_id)
        elif isinstance(event, oa.InputAudioBufferClearEvent):
            self.audio.clear()
            self.outbox.send(oa.ClearedEvent())
        elif self.config.mode != "conversation":
            self.error(
                "invalid_event_type",
                f"`{event.type}` needs a conversation session (session.type `realtime`); "  # type: ignore[attr-defined]
                "this is a transcription session",
                "type",
                event_id,
            )
        else:
            self._conversation_event(event, event_id)

    def _session_update(self, event: oa.SessionUpdateEvent) -> None:
        engine = self.engine
        try:
            new = apply_session_update(
                self.config, event.session, engine.asr_models, engine.llm_name, self.started
            )
        except InvalidParameter as exc:
            self.error(exc.code, exc.message, exc.param, event.event_id)
            return
        self.config = new
        self.audio.apply_config(new, turn_mode(new))
        self.outbox.send(oa.SessionUpdatedEvent(session=session_object(new, self.session_id)))

    def _append(self, payload: str, event_id: str | None) -> None:
        try:
            samples = self.audio.to_samples(payload)
        except AudioPayloadError as exc:
            self.error("invalid_audio", str(exc), "audio", event_id)
            return
        self.started = True
        self.audio.append(samples)

    def _conversation_event(self, event: BaseModel, event_id: str | None) -> None:
        try:
            if isinstance(event, oa.ConversationItemCreateEvent):
                self.conversation.add_message(event)
                self.started = True
            elif isinstance(event, oa.ResponseCreateEvent):
                options = self._response_options(event.response or oa.ResponseParams())
                self.conversation.create_response(options, self.audio.wait_transcribed)
            elif isinstance(event, oa.ResponseCancelEvent):
                self._response_cancel(event)
        except (ConversationError, InvalidParameter) as exc:
            self.error(exc.code, exc.message, exc.param, event_id)

    def _response_options(self, params: oa.ResponseParams) -> ResponseOptions:
        """The options of a response.create (raises InvalidParameter for what we cannot honour)."""
        unsupported = oa.unsupported_fields(params, "response")
        if params.output_modalities is not None and set(params.output_modalities) - {"text"}:
            unsupported.append("response.output_modalities")
        if params.conversation not in (None, "auto"):
            unsupported.append("response.conversation")
        if unsupported:
            raise InvalidParameter(
                unsupported[0],
                f"Not supported by this server: {', '.join(unsupported)}",
                code="unsupported_field",
            )
        mot = params.max_output_tokens
        max_out = (
            self.config.max_output_tokens if "max_output_tokens" not in params.model_fields_set else None
        )
        if mot not in (None, "inf"):
            if int(mot) < 1:
                raise InvalidParameter("response.max_output_tokens", "max_output_tokens must be at least 1")
            max_out = int(mot)
        return ResponseOptions(
            instructions=params.instructions if params.instructions is not None else self.config.instructions,
            max_output_tokens=max_out,
            metadata=params.metadata,
        )

    def _response_cancel(self, event: oa.ResponseCancelEvent) -> None:
        if event.response_id is not None and event.response_id != self.conversation.response_id:
            raise ConversationError(
                "response_cancel_not_active", f"No active response with id {event.response_id}", "response_id"
            )
        if not self.conversation.cancel_response("client_cancelled"):
            raise ConversationError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )

    # ---- what the turns produce ----

    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self.outbox.send(oa.SpeechStartedEvent(audio_start_ms=audio_start_ms, item_id=item_id))
        if self.config.mode == "conversation" and self.config.interrupt_response:
            self.conversation.cancel_response("turn_detected")

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        self.outbox.send(oa.SpeechStoppedEvent(audio_end_ms=audio_end_ms, item_id=item_id))

    def committed(self, item_id: str) -> None:
        if self.config.mode == "conversation":
            self.outbox.send(
                oa.CommittedEvent(item_id=item_id, previous_item_id=self.conversation.last_item_id)
            )
            self.conversation.add_user_audio(item_id)
        else:
            previous = self.transcription_items[-1] if self.transcription_items else None
            self.transcription_items.append(item_id)
            self.outbox.send(oa.CommittedEvent(item_id=item_id, previous_item_id=previous))

    def delta(self, item_id: str, text: str) -> None:
        self.outbox.send(oa.TranscriptionDeltaEvent(item_id=item_id, delta=text))

    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        usage = oa.TranscriptionUsageDuration(seconds=round(turn.seconds, 3))
        self.outbox.send(oa.TranscriptionCompletedEvent(item_id=item_id, transcript=transcript, usage=usage))
        if self.config.mode != "conversation":
            return
        self.conversation.set_transcript(item_id, transcript)
        if self.config.vad is not None and self.config.create_response and transcript.strip():
            options = ResponseOptions(self.config.instructions, self.config.max_output_tokens)
            with contextlib.suppress(ConversationError):
                self.conversation.create_response(options, self.audio.wait_transcribed)

    def transcription_failed(self, item_id: str, error: BaseException) -> None:
        detail = oa.ErrorDetail(
            type="server_error", code="transcription_failed", message=f"Transcription failed: {error}"
        )
        self.outbox.send(oa.TranscriptionFailedEvent(item_id=item_id, error=detail))
        if self.config.mode == "conversation":
            self.conversation.set_transcript(item_id, "")
