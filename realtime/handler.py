"""One /v1/realtime WebSocket session: a receive task and a work task joined by a bounded queue.

The receive task only reads frames and parses them into typed events (so the socket is always read, even
while the model is slow); the work task hands each to the session's dialect (realtime/dialect_*.py), which
applies it and renders what comes of it. Decodes and responses run as their own tasks and emit through
the Outbox, the socket's single writer. This module also enforces the session's limits.

Which dialect a connection speaks (documented rule):
  1. `?intent=transcription` or `?model=<speech model>` in the URL: OpenAI, transcription session.
     `?model=<the served LLM>` (or `?intent=conversation`): OpenAI, conversation ("realtime") session.
  2. Otherwise the first client event decides: `session.update` carrying a `session` object, or any
     OpenAI-only event (clear, conversation.*, response.*), selects OpenAI; anything else (vLLM's flat
     `session.update {model}`, a bare append or commit) selects vLLM.
Until then `session.created` carries both dialects' fields (vLLM's `id`/`created` and OpenAI's
`event_id`/`session`), so either kind of client can read it. Once chosen, the other dialect's
`session.update` shape is answered with an error event.

Every frame's text is checked once, as it is parsed (engine/client_text.py): a string holding an unpaired
UTF-16 surrogate is answered with an error event naming the field (code `invalid_text`), never applied.
A closing session gives the client CLOSE_TIMEOUT_S to take its events and the close frame; a client that
does not (it never reads) has its TCP connection aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import uuid
from collections.abc import Mapping
from typing import Literal

from aiohttp import WSMsgType, web
from pydantic import BaseModel

from engine.client_text import check_client_text, first_unpaired_surrogate
from engine.errors import InvalidParameter
from engine.interface import EngineClient
from realtime import protocol_openai as oa
from realtime import protocol_vllm as vl
from realtime.dialect import Dialect, InboundError
from realtime.dialect_openai import OpenAIDialect, initial_config
from realtime.dialect_vllm import VllmDialect
from realtime.dialect_vllm import error_event as vllm_error_event
from realtime.limits import RealtimeLimits
from realtime.openai_session import session_object
from realtime.outbox import Outbox
from realtime.session import SessionMode, StreamingSettings

log = logging.getLogger(__name__)

DialectName = Literal["openai", "vllm"]
INBOX_SIZE = 256
FLUSH_TIMEOUT_S = 15.0  # how long a closing session may spend emitting its final text
# How long the client gets to take the queued events and answer the close frame; after that the TCP
# connection is aborted (a client that never reads would otherwise hold it, with its unsent data, for good).
CLOSE_TIMEOUT_S = 5.0

# Close codes (RFC 6455)
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

OPENAI_ONLY_EVENTS = frozenset(oa.CLIENT_EVENTS) - frozenset(vl.CLIENT_EVENTS) | oa.UNSUPPORTED_CLIENT_EVENTS


class _Disconnected:
    pass


Inbound = BaseModel | _Disconnected


def dialect_from_query(
    query: Mapping[str, str], engine: EngineClient
) -> tuple[DialectName | None, SessionMode]:
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
        engine: EngineClient,
        limits: RealtimeLimits,
        streaming: StreamingSettings,
        query: Mapping[str, str],
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport  # the connection's, aborted when the close cannot complete
        self.engine = engine
        self.limits = limits
        self.streaming = streaming
        self.id = f"sess_{uuid.uuid4().hex[:24]}"
        self.outbox = Outbox(ws, self._error_event)
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=INBOX_SIZE)
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        self.last_activity = self.started_at
        self._stop: asyncio.Future[tuple[str, str, int]] = loop.create_future()
        name, self._mode = dialect_from_query(query, engine)
        self._query_model = query.get("model")
        self.dialect: Dialect | None = self._open_dialect(name) if name is not None else None

    def _open_dialect(self, name: DialectName) -> Dialect:
        if name == "vllm":
            return VllmDialect(self.id, self.outbox, self.engine, self.streaming)
        config = initial_config(self.engine, self._mode, self._query_model)
        return OpenAIDialect(self.id, self.outbox, self.engine, self.streaming, config)

    # ---- lifecycle ----

    async def run(self) -> None:
        writer = asyncio.create_task(self.outbox.run())
        self._send_session_created()
        receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._work_loop()
        except Exception:  # a bug: say so on the socket rather than closing it without a word
            log.exception("realtime session %s failed", self.id)
            self.outbox.send(self._error_event("server_error", "The session failed; see the server log"))
            self.outbox.close(INTERNAL_ERROR, "server_error")
        finally:
            receiver.cancel()
            if self.dialect is not None:
                await self.dialect.close()
            if not self.outbox.closing:
                self.outbox.close(1000, "")
            await self._end_connection(writer)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver

    async def _end_connection(self, writer: asyncio.Task[None]) -> None:
        """Let the writer send what is queued and run the close handshake, within CLOSE_TIMEOUT_S. A client
        that has not taken it all by then (it is not reading) loses the connection: aborted, not closed,
        since a graceful close would wait for its unsent data to drain, which it never does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT_S
        done, _ = await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self._abort("the client did not take its events")
            return
        if not self.ws.closed:  # the writer stopped early (a failed write)
            try:
                await asyncio.wait_for(
                    self.ws.close(code=self.outbox.close_code or 1000), max(0.1, deadline - loop.time())
                )
            except asyncio.TimeoutError:
                self._abort("the close handshake did not complete")
                return
            except Exception as exc:
                log.debug("close failed: %s", exc)
        if self.transport is not None and self.transport.get_write_buffer_size() > 0:
            self._abort("the client did not take the close frame")

    def _abort(self, why: str) -> None:
        transport = self.transport
        if transport is None or (transport.is_closing() and transport.get_write_buffer_size() == 0):
            return
        log.info("session %s: %s within %gs; aborting the connection", self.id, why, CLOSE_TIMEOUT_S)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a reset, so the kernel drops what is still queued for the client too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _error_event(self, code: str, message: str) -> BaseModel:
        """The session's error event (vLLM's shape while the dialect is undecided); for the Outbox."""
        if self.dialect is None:
            return vllm_error_event(code, message)
        return self.dialect.error_event(code, message, kind="server_error")

    def request_stop(self, code: str, message: str, close_code: int) -> None:
        """Ask the session to emit its final text, an error event, and close (used by shutdown)."""
        if not self._stop.done():
            self._stop.set_result((code, message, close_code))

    def _send_session_created(self) -> None:
        if isinstance(self.dialect, OpenAIDialect):
            self.dialect.session_created()
            return
        # Undecided: readable by both kinds of client.
        event = vl.SessionCreated(id=self.id).model_dump()
        event["event_id"] = oa.new_id("event")
        event["session"] = session_object(initial_config(self.engine, self._mode, None), self.id)
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
        event_type, event_id = data["type"], data.get("event_id")
        if not isinstance(event_id, str) or first_unpaired_surrogate(event_id) is not None:
            event_id = None  # echoed in error events only when it can be
        if self.dialect is None:  # the first event decides
            is_openai = event_type in OPENAI_ONLY_EVENTS or (
                event_type == "session.update" and isinstance(data.get("session"), dict)
            )
            self.dialect = self._open_dialect("openai" if is_openai else "vllm")
        try:  # once for every frame: no handler can then echo text that cannot be encoded
            check_client_text(data)
        except InvalidParameter as exc:
            return InboundError(code=exc.code, message=exc.message, param=exc.param, event_id=event_id)
        return self.dialect.parse(event_type, data, event_id)

    # ---- work task ----

    async def _work_loop(self) -> None:
        loop = asyncio.get_running_loop()
        get: asyncio.Task[Inbound] | None = None
        try:
            while True:
                now = loop.time()
                idle_deadline = self.last_activity + self.limits.session_idle_timeout
                life_deadline = self.started_at + self.limits.max_session_seconds
                if now >= life_deadline:
                    return await self._close_for_limit(*self._expired())
                if now >= idle_deadline:
                    return await self._close_for_limit(*self._idle())
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
                    if self._buffered_seconds() > self.limits.max_buffered_audio_seconds:
                        return await self._close_for_limit(*self._too_much_audio())
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

    def _dispatch(self, event: BaseModel) -> None:
        if self.dialect is None:  # a frame that did not parse, before any event chose the dialect
            assert isinstance(event, InboundError)
            self.outbox.send(vllm_error_event(event.code, event.message))
        elif isinstance(event, InboundError):
            self.dialect.report(event)
        else:
            self.dialect.handle(event)

    def _buffered_seconds(self) -> float:
        return self.dialect.audio.buffered_seconds() if self.dialect is not None else 0.0

    def _expired(self) -> tuple[str, str, int]:
        seconds = self.limits.max_session_seconds
        return (
            "session_expired",
            f"The session reached its maximum duration of {seconds:g}s",
            POLICY_VIOLATION,
        )

    def _idle(self) -> tuple[str, str, int]:
        seconds = self.limits.session_idle_timeout
        return (
            "session_idle_timeout",
            f"No client event for {seconds:g}s; closing the session",
            POLICY_VIOLATION,
        )

    def _too_much_audio(self) -> tuple[str, str, int]:
        message = (
            f"More than {self.limits.max_buffered_audio_seconds:g}s of audio is buffered; "
            "commit more often or stream slower"
        )
        return "input_audio_buffer_too_large", message, MESSAGE_TOO_BIG

    async def _close_for_limit(self, code: str, message: str, close_code: int) -> None:
        """Final text first, then the error event, then the close frame."""
        if self.dialect is None:  # undecided: nothing to flush; vLLM's error shape (as _dispatch)
            self.outbox.send(vllm_error_event(code, message))
        else:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self.dialect.flush(), timeout=FLUSH_TIMEOUT_S)
            kind = "invalid_request_error" if close_code != GOING_AWAY else "server_error"
            self.dialect.error(code, message, kind=kind)
        self.outbox.close(close_code, code)
