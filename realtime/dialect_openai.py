"""OpenAI's GA realtime dialect: its events (realtime/protocol_openai.py) to session calls, results to events.

A transcription session streams each turn's transcript; a conversation ("realtime") session also keeps
the conversation's items and answers with text or spoken responses (realtime/conversation.py). Session settings
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
from realtime.openai_session import (
    apply_session_update,
    check_modalities,
    output_encoding,
    output_voice,
    session_object,
)
from realtime.outbox import Outbox
from realtime.session import SessionConfig, SessionMode, StreamingSettings
from realtime.transcriber import TurnTranscriber
from realtime.transcript_logprobs import DeltaLogprobs, to_wire

ENCODER_POSITIONS_PER_SECOND = 50  # Whisper's; the `tokens` usage form counts them as audio tokens
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
        self.delta_logprobs = DeltaLogprobs()
        self.pending_deltas: list[tuple[str, str]] = []  # (item_id, delta) awaiting the final's logprobs
        self.idle_items: set[str] = set()  # turns committed by the idle timeout: answered even if silent

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
                self.config,
                event.session,
                engine.asr_models,
                engine.llm_name,
                self.started,
                engine.tts_voices,
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
        if self.conversation.responding:  # idle_timeout_ms counts from the end of the last response
            self.audio.restart_idle()
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
            elif isinstance(event, oa.ConversationItemTruncateEvent):
                self.conversation.truncate(event)
            elif isinstance(event, oa.ConversationItemRetrieveEvent):
                self.conversation.retrieve(event.item_id)
            elif isinstance(event, oa.ConversationItemDeleteEvent):
                self.conversation.delete(event.item_id)
        except (ConversationError, InvalidParameter) as exc:
            self.error(exc.code, exc.message, exc.param, event_id)

    def _response_options(self, params: oa.ResponseParams) -> ResponseOptions:
        """The options of a response.create (raises InvalidParameter for what we cannot honour)."""
        unsupported = oa.unsupported_fields(params, "response")
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
        options = self._session_response_options()
        options.max_output_tokens = max_out
        options.metadata = params.metadata
        if params.instructions is not None:
            options.instructions = params.instructions
        self._response_output(options, params)
        return options

    def _session_response_options(self) -> ResponseOptions:
        config = self.config
        return ResponseOptions(
            instructions=config.instructions,
            max_output_tokens=config.max_output_tokens,
            modalities=config.output_modalities,
            voice=config.voice,
            speed=config.speed,
            encoding=config.output_encoding,
        )

    def _response_output(self, options: ResponseOptions, params: oa.ResponseParams) -> None:
        """response.create's own output_modalities and audio.output, for this response only."""
        voices = self.engine.tts_voices
        if params.output_modalities is not None:
            options.modalities = check_modalities(
                params.output_modalities, voices, "response.output_modalities"
            )
        output = params.audio.output if params.audio is not None else None
        if output is not None and output.format is not None:
            options.encoding = output_encoding(output.format, "response.audio.output.format")
        if output is not None and output.voice is not None:
            options.voice = output_voice(output.voice, voices, "response.audio.output.voice")
        if options.audio and options.voice is None:
            options.voice = output_voice(None, voices, "response.audio.output.voice")

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
        if not self.config.include_logprobs:
            self.outbox.send(oa.TranscriptionDeltaEvent(item_id=item_id, delta=text))
        elif self.audio.turn is not None and self.audio.turn_item_id == item_id:
            logprobs = self.delta_logprobs.of(item_id, text, self.audio.turn.last_result)
            self.outbox.send(oa.TranscriptionDeltaEvent(item_id=item_id, delta=text, logprobs=logprobs))
        else:  # the turn's final decode: its logprobs come with transcribed(), right after this call
            self.pending_deltas.append((item_id, text))

    def _send_pending_deltas(self, turn: TurnTranscriber | None) -> None:
        for item_id, text in self.pending_deltas:
            result = turn.last_result if turn is not None else None
            logprobs = self.delta_logprobs.of(item_id, text, result)
            self.outbox.send(oa.TranscriptionDeltaEvent(item_id=item_id, delta=text, logprobs=logprobs))
        self.pending_deltas.clear()

    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        logprobs = None
        if self.config.include_logprobs:
            self._send_pending_deltas(turn)
            self.delta_logprobs.forget(item_id)
            logprobs = to_wire(turn.last_result)
        usage = self._transcription_usage(turn)
        self.outbox.send(
            oa.TranscriptionCompletedEvent(
                item_id=item_id, transcript=transcript, usage=usage, logprobs=logprobs
            )
        )
        if self.config.mode != "conversation":
            return
        self.conversation.set_transcript(item_id, transcript)
        idle = item_id in self.idle_items
        self.idle_items.discard(item_id)
        if self.config.vad is not None and self.config.create_response and (transcript.strip() or idle):
            options = self._session_response_options()
            with contextlib.suppress(ConversationError):
                self.conversation.create_response(options, self.audio.wait_transcribed)

    def _transcription_usage(
        self, turn: TurnTranscriber
    ) -> oa.TranscriptionUsageDuration | oa.TranscriptionUsageTokens:
        """`duration` (whisper-1's form), or `tokens` when the session named a token-billed model: input
        tokens are the audio's Whisper encoder positions (50 a second), output the decoded tokens."""
        if not self.config.usage_tokens:
            return oa.TranscriptionUsageDuration(seconds=round(turn.seconds, 3))
        audio_tokens = round(turn.seconds * ENCODER_POSITIONS_PER_SECOND)
        return oa.TranscriptionUsageTokens(
            input_tokens=audio_tokens,
            output_tokens=turn.decoded_tokens,
            total_tokens=audio_tokens + turn.decoded_tokens,
            input_token_details=oa.TranscriptionUsageInputDetails(audio_tokens=audio_tokens),
        )

    def timeout_triggered(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> None:
        self.outbox.send(
            oa.TimeoutTriggeredEvent(
                item_id=item_id, audio_start_ms=audio_start_ms, audio_end_ms=audio_end_ms
            )
        )
        self.idle_items.add(item_id)

    def transcription_failed(self, item_id: str, error: BaseException) -> None:
        self._send_pending_deltas(None)
        detail = oa.ErrorDetail(
            type="server_error", code="transcription_failed", message=f"Transcription failed: {error}"
        )
        self.outbox.send(oa.TranscriptionFailedEvent(item_id=item_id, error=detail))
        if self.config.mode == "conversation":
            self.conversation.set_transcript(item_id, "")
