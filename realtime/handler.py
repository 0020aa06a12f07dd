"""One /v1/realtime WebSocket session: a receive task and a work task joined by a bounded queue.

The receive task only reads frames and parses them into typed events (so the socket is always read, even
while the model is slow); the work task applies them. Decodes and responses run as their own tasks and
emit through the Outbox, the socket's single writer.

Which dialect a connection speaks (documented rule):
  1. `?intent=transcription` or `?model=<speech model>` in the URL: OpenAI, transcription session.
     `?model=<the served LLM>` (or `?intent=conversation`): OpenAI, conversation ("realtime") session.
  2. Otherwise the first client event decides: `session.update` carrying a `session` object, or any
     OpenAI-only event (clear, conversation.*, response.*), selects OpenAI; anything else (vLLM's flat
     `session.update {model}`, a bare append or commit) selects vLLM.
Until then `session.created` carries both dialects' fields (vLLM's `id`/`created` and OpenAI's
`event_id`/`session`), so either kind of client can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import replace
from typing import Any, Literal

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from engine.request import Priority, TranscriptionRequest, TranscriptionResult
from realtime import protocol_openai as oa
from realtime import protocol_vllm as vl
from realtime.audio_input import AudioInput, AudioPayloadError, TurnMode
from realtime.conversation import Conversation, ConversationError, ResponseOptions
from realtime.emitters import Emitter, OpenAIEmitter, VllmEmitter
from realtime.outbox import Outbox
from realtime.partial_ticker import PartialTicker
from realtime.session import (
    RealtimeLimits,
    SessionConfig,
    SessionUpdateError,
    StreamingSettings,
    apply_openai_update,
    resolve_asr_model,
)
from realtime.transcriber import DecodeFn, TurnTranscriber

log = logging.getLogger(__name__)

Dialect = Literal["openai", "vllm"]
INBOX_SIZE = 256
FLUSH_TIMEOUT_S = 15.0  # how long a closing session may spend emitting its final text

# Close codes (RFC 6455)
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013

OPENAI_ONLY_EVENTS = frozenset(oa.CLIENT_EVENTS) - frozenset(vl.CLIENT_EVENTS) | oa.UNSUPPORTED_CLIENT_EVENTS


class InboundError(BaseModel):
    """A client frame that could not be parsed; reported by the work task in arrival order."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


class _Disconnected:
    pass


Inbound = BaseModel | _Disconnected


def make_decoder(engine: Any, config: SessionConfig, streaming: StreamingSettings) -> DecodeFn:
    model, language = config.asr_model, config.language

    async def decode(
        audio, prompt: str | None, with_timestamps: bool, preview: bool, draft: list[int] | None
    ) -> TranscriptionResult:
        request = TranscriptionRequest(
            audio=audio,
            model=model,
            language=language,
            prompt=prompt,
            priority=Priority.PREVIEW if preview else Priority.REALTIME,
            encoder_context="trimmed",
            min_context_s=(
                streaming.partial_min_encoder_context_s if preview else streaming.min_encoder_context_s
            ),
            with_timestamps=with_timestamps,
            draft_tokens=draft,
        )
        result = None
        async for out in engine.transcribe(request):
            if out.result is not None:
                result = out.result
        if result is None:
            raise RuntimeError("the engine ended the transcription without a result")
        return result

    return decode


def engine_windows(engine: Any) -> int:
    """Whisper windows queued or decoding in the engine (0 when it does not report them)."""
    stats = engine.stats() if hasattr(engine, "stats") else None
    return (stats.asr_waiting + stats.asr_running) if stats is not None else 0


def dialect_from_query(
    query: Any, engine: Any
) -> tuple[Dialect | None, Literal["transcription", "conversation"]]:
    intent, model = query.get("intent"), query.get("model")
    if intent == "transcription":
        return "openai", "transcription"
    if intent == "conversation":
        return "openai", "conversation"
    if model:
        if model in engine.asr_models or model == "whisper-1":
            return "openai", "transcription"
        return "openai", "conversation"
    return None, "transcription"


class RealtimeSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        engine: Any,
        limits: RealtimeLimits,
        streaming: StreamingSettings,
        query: Any,
        ticker: PartialTicker | None = None,
    ) -> None:
        self.ws = ws
        self.engine = engine
        self.limits = limits
        self.id = f"sess_{uuid.uuid4().hex[:24]}"
        self.outbox = Outbox(ws)
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=INBOX_SIZE)
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.last_activity = self.started_at
        self._stop: asyncio.Future[tuple[str, str, int]] = loop.create_future()
        self.dialect, mode = dialect_from_query(query, engine)
        self.query_model: str | None = query.get("model")
        self.config = SessionConfig(mode=mode, vad=SessionConfig().vad)
        self.config.asr_model = next(iter(engine.asr_models), "")
        if mode == "conversation":
            self.config.llm_model = engine.llm_name
        elif self.query_model and self.query_model in engine.asr_models:
            self.config.asr_model = self.query_model
        self.model_validated = False  # vLLM: session.update {model} seen
        self.started = False  # any audio or item sent (session.type is then fixed)
        self.emitter: Emitter = (
            OpenAIEmitter(self.outbox) if self.dialect == "openai" else VllmEmitter(self.outbox)
        )
        self.audio = AudioInput(
            self.config,
            self._turn_mode(),
            self,
            lambda cfg: make_decoder(engine, cfg, streaming),
            streaming,
            lambda: engine_windows(engine),
            ticker,
        )
        self.conversation = Conversation(engine, self.outbox, f"conv_{uuid.uuid4().hex[:24]}")
        self.transcription_items: list[str] = []

    # ---- lifecycle ----

    async def run(self) -> None:
        writer = asyncio.create_task(self.outbox.run())
        self._send_session_created()
        receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._work_loop()
        finally:
            receiver.cancel()
            await self.audio.close()
            await self.conversation.close()
            if not self.outbox.closing:
                self.outbox.close(1000, "")
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), timeout=5.0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close(code=self.outbox.close_code or 1000)

    def request_stop(self, code: str, message: str, close_code: int) -> None:
        """Ask the session to emit its final text, an error event, and close (used by shutdown)."""
        if not self._stop.done():
            self._stop.set_result((code, message, close_code))

    def _send_session_created(self) -> None:
        if self.dialect == "openai":
            assert isinstance(self.emitter, OpenAIEmitter)
            self.emitter.session_created(self.id, self.config)
            return
        event = vl.SessionCreated(id=self.id).model_dump()
        if self.dialect is None:  # undecided: readable by both kinds of client
            event["event_id"] = oa.new_id("event")
            event["session"] = self.config.to_openai(self.id)
        self.outbox.send(event)

    # ---- receive task ----

    async def _receive_loop(self) -> None:
        try:
            async for msg in self.ws:
                self.last_activity = asyncio.get_running_loop().time()
                if msg.type == WSMsgType.TEXT:
                    await self.inbox.put(self._parse(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await self.inbox.put(
                        InboundError(
                            code="binary_not_supported",
                            message="Binary frames are not supported; send JSON text events with base64 audio",
                        )
                    )
                elif msg.type == WSMsgType.ERROR:
                    log.info("websocket error: %s", self.ws.exception())
                    break
        finally:
            try:
                self.inbox.put_nowait(_Disconnected())
            except asyncio.QueueFull:  # the work task is behind; stop it directly
                if not self._stop.done():
                    self._stop.set_result(("", "", 1000))

    def _parse(self, text: str) -> BaseModel:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            return InboundError(code="invalid_json", message=f"Invalid JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return InboundError(
                code="invalid_event", message="An event must be a JSON object with a string `type`"
            )
        event_type = data["type"]
        client_event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        if self.dialect is None:
            is_openai = event_type in OPENAI_ONLY_EVENTS or (
                event_type == "session.update" and isinstance(data.get("session"), dict)
            )
            self._choose_dialect("openai" if is_openai else "vllm")
        models = oa.CLIENT_EVENTS if self.dialect == "openai" else vl.CLIENT_EVENTS
        model = models.get(event_type)
        if model is None:
            if self.dialect == "openai" and event_type in oa.UNSUPPORTED_CLIENT_EVENTS:
                return InboundError(
                    code="unsupported_event",
                    message=f"The event type `{event_type}` is not supported by this server",
                    param="type",
                    event_id=client_event_id,
                )
            return InboundError(
                code="unknown_event" if self.dialect == "vllm" else "invalid_event_type",
                message=f"Unknown event type: {event_type}",
                param="type",
                event_id=client_event_id,
            )
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            return InboundError(
                code="invalid_value",
                message=f"Invalid `{event_type}` event: {param}: {first['msg']}",
                param=param,
                event_id=client_event_id,
            )

    def _choose_dialect(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.emitter = OpenAIEmitter(self.outbox) if dialect == "openai" else VllmEmitter(self.outbox)
        if dialect == "vllm":
            self.config = replace(self.config, encoding="pcm16", input_rate=vl.SAMPLE_RATE, vad=None)
            self.audio.apply_config(self.config, "stream")

    # ---- work task ----

    async def _work_loop(self) -> None:
        loop = asyncio.get_running_loop()
        get: asyncio.Task | None = None
        try:
            while True:
                now = loop.time()
                idle_deadline = self.last_activity + self.limits.session_idle_timeout
                life_deadline = self.started_at + self.limits.max_session_seconds
                if now >= life_deadline:
                    return await self._close_for_limit(
                        "session_expired",
                        f"The session reached its maximum duration of {self.limits.max_session_seconds:g}s",
                        POLICY_VIOLATION,
                    )
                if now >= idle_deadline:
                    return await self._close_for_limit(
                        "session_idle_timeout",
                        f"No client event for {self.limits.session_idle_timeout:g}s; closing the session",
                        POLICY_VIOLATION,
                    )
                if get is None:
                    get = asyncio.create_task(self.inbox.get())
                done, _ = await asyncio.wait(
                    {get, self._stop},
                    timeout=min(idle_deadline, life_deadline) - now,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if get in done:
                    event, get = get.result(), None
                    if isinstance(event, _Disconnected):
                        return
                    self._dispatch(event)
                    if self.audio.buffered_seconds() > self.limits.max_buffered_audio_seconds:
                        return await self._close_for_limit(
                            "input_audio_buffer_too_large",
                            f"More than {self.limits.max_buffered_audio_seconds:g}s of audio is buffered; "
                            "commit more often or stream slower",
                            MESSAGE_TOO_BIG,
                        )
                    if self.outbox.closing:
                        return
                elif self._stop in done:
                    code, message, close_code = self._stop.result()
                    if not code:
                        return
                    return await self._close_for_limit(code, message, close_code)
        finally:
            if get is not None:
                get.cancel()

    async def _close_for_limit(self, code: str, message: str, close_code: int) -> None:
        """Final text first, then the error event, then the close frame."""
        self.conversation.cancel_response("client_cancelled")
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(self.audio.flush(), timeout=FLUSH_TIMEOUT_S)
        self.emitter.error(
            code, message, kind="invalid_request_error" if close_code != GOING_AWAY else "server_error"
        )
        self.outbox.close(close_code, code)

    def _dispatch(self, event: BaseModel) -> None:
        if isinstance(event, InboundError):
            self.emitter.error(event.code, event.message, event.param, event.event_id)
        elif self.dialect == "vllm":
            self._dispatch_vllm(event)
        else:
            self._dispatch_openai(event)

    def _turn_mode(self) -> TurnMode:
        if self.dialect == "vllm":
            return "stream"
        return "vad" if self.config.vad is not None else "manual"

    # ---- vLLM dialect ----

    def _dispatch_vllm(self, event: BaseModel) -> None:
        if isinstance(event, vl.SessionUpdate):
            try:
                model = resolve_asr_model(event.model, self.engine.asr_models, "model")
            except SessionUpdateError as exc:
                self.emitter.error(exc.code, exc.message)
                return
            self.config = replace(self.config, asr_model=model)
            self.audio.apply_config(self.config, "stream")
            self.model_validated = True
        elif isinstance(event, vl.InputAudioBufferAppend):
            self._append(event.audio, None)
        elif isinstance(event, vl.InputAudioBufferCommit):
            if not self.model_validated:
                self.emitter.error(
                    "model_not_validated",
                    "Model not validated. Make sure to validate the model by sending a session.update event.",
                )
            elif not event.final:
                self.audio.start_stream()
            else:
                error = self.audio.finish_stream()
                if error:
                    self.emitter.error("input_audio_buffer_commit_empty", error)

    # ---- OpenAI dialect ----

    def _dispatch_openai(self, event: BaseModel) -> None:
        event_id = getattr(event, "event_id", None)
        if isinstance(event, oa.SessionUpdateEvent):  # the session's own fields are checked on apply
            unsupported = [key for key, value in (event.model_extra or {}).items() if value is not None]
        else:
            unsupported = [name.lstrip(".") for name in oa.unsupported_fields(event, "")]
        if unsupported:
            self.emitter.error(
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
                self.emitter.error("input_audio_buffer_commit_empty", error, None, event_id)
        elif isinstance(event, oa.InputAudioBufferClearEvent):
            self.audio.clear()
            self.emitter.cleared()
        elif self.config.mode != "conversation":
            self.emitter.error(
                "invalid_event_type",
                f"`{event.type}` needs a conversation session (session.type `realtime`); "  # type: ignore[attr-defined]
                "this is a transcription session",
                "type",
                event_id,
            )
        elif isinstance(event, oa.ConversationItemCreateEvent):
            try:
                self.conversation.add_message(event)
                self.started = True
            except ConversationError as exc:
                self.emitter.error(exc.code, exc.message, exc.param, event_id)
        elif isinstance(event, oa.ResponseCreateEvent):
            self._response_create(event)
        elif isinstance(event, oa.ResponseCancelEvent):
            if event.response_id is not None and event.response_id != self.conversation.response_id:
                self.emitter.error(
                    "response_cancel_not_active",
                    f"No active response with id {event.response_id}",
                    "response_id",
                    event_id,
                )
            elif not self.conversation.cancel_response("client_cancelled"):
                self.emitter.error(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    None,
                    event_id,
                )

    def _session_update(self, event: oa.SessionUpdateEvent) -> None:
        try:
            new = apply_openai_update(
                self.config, event.session, self.engine.asr_models, self.engine.llm_name, self.started
            )
        except SessionUpdateError as exc:
            self.emitter.error(exc.code, exc.message, exc.param, event.event_id)
            return
        self.config = new
        self.audio.apply_config(new, self._turn_mode())
        self.emitter.session_updated(self.id, new)

    def _response_create(self, event: oa.ResponseCreateEvent) -> None:
        params = event.response or oa.ResponseParams()
        unsupported = oa.unsupported_fields(params, "response")
        if params.output_modalities is not None and set(params.output_modalities) - {"text"}:
            unsupported.append("response.output_modalities")
        if params.conversation not in (None, "auto"):
            unsupported.append("response.conversation")
        if unsupported:
            self.emitter.error(
                "unsupported_field",
                f"Not supported by this server: {', '.join(unsupported)}",
                unsupported[0],
                event.event_id,
            )
            return
        mot = params.max_output_tokens
        max_out = (
            self.config.max_output_tokens if "max_output_tokens" not in params.model_fields_set else None
        )
        if mot not in (None, "inf"):
            if int(mot) < 1:
                self.emitter.error(
                    "invalid_value",
                    "max_output_tokens must be at least 1",
                    "response.max_output_tokens",
                    event.event_id,
                )
                return
            max_out = int(mot)
        options = ResponseOptions(
            instructions=params.instructions if params.instructions is not None else self.config.instructions,
            max_output_tokens=max_out,
            metadata=params.metadata,
        )
        try:
            self.conversation.create_response(options, self.audio.wait_transcribed)
        except ConversationError as exc:
            self.emitter.error(exc.code, exc.message, exc.param, event.event_id)

    # ---- audio ----

    def _append(self, payload: str, event_id: str | None) -> None:
        try:
            samples = self.audio.to_samples(payload)
        except AudioPayloadError as exc:
            self.emitter.error("invalid_audio", str(exc), "audio", event_id)
            return
        self.started = True
        self.audio.append(samples)

    # ---- TurnListener (called by AudioInput) ----

    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self.emitter.speech_started(item_id, audio_start_ms)
        if self.config.mode == "conversation" and self.config.interrupt_response:
            self.conversation.cancel_response("turn_detected")

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        self.emitter.speech_stopped(item_id, audio_end_ms)

    def committed(self, item_id: str) -> None:
        if self.config.mode == "conversation":
            previous = self.conversation.last_item_id
            self.emitter.committed(item_id, previous)
            self.conversation.add_user_audio(item_id)
        else:
            previous = self.transcription_items[-1] if self.transcription_items else None
            self.transcription_items.append(item_id)
            self.emitter.committed(item_id, previous)

    def delta(self, item_id: str, text: str) -> None:
        self.emitter.transcript_delta(item_id, text)

    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        self.emitter.transcript_done(item_id, transcript, turn)
        if self.config.mode != "conversation":
            return
        self.conversation.set_transcript(item_id, transcript)
        if self.config.vad is not None and self.config.create_response and transcript.strip():
            options = ResponseOptions(self.config.instructions, self.config.max_output_tokens)
            with contextlib.suppress(ConversationError):
                self.conversation.create_response(options, self.audio.wait_transcribed)

    def transcription_failed(self, item_id: str, error: BaseException) -> None:
        self.emitter.transcript_failed(item_id, f"Transcription failed: {error}")
        if self.config.mode == "conversation":
            self.conversation.set_transcript(item_id, "")
