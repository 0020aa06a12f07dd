"""Registers /v1/realtime: the session limit, the `realtime` subprotocol, and closing every session on shutdown.

Entry points for the composition root (server/app.py) -- realtime imports nothing from it:
  setup_realtime(app, limits, streaming)
      adds GET /v1/realtime and an on_shutdown hook that closes every session with 1001 after its final
      text; call it before registering a hook that drains or stops the engine, so the sockets close
      first (a session's final decode is a new engine request, which a draining engine refuses).
      limits: realtime.limits.RealtimeLimits (the one set of defaults for the realtime limits);
      streaming: realtime.session.StreamingSettings (None: the defaults).
  ENGINE_KEY: web.AppKey[EngineClient]
      the engine every session talks to; the server's engine cleanup_ctx sets
      `app[realtime.routes.ENGINE_KEY] = engine` before the app serves.
  SESSIONS_KEY, LIMITS_KEY, STREAMING_KEY: the live sessions and the settings setup_realtime stored.
Authentication is not checked here: the server's auth middleware covers /v1/realtime too (`Authorization:
Bearer`, or for the WebSocket upgrade the `openai-insecure-api-key.<key>` subprotocol). The handshake
answers with the `realtime` subprotocol when the client offers it, whatever else it offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from engine.interface import EngineClient
from realtime import dialect_openai, dialect_vllm
from realtime.handler import (
    CLOSE_TIMEOUT_S,
    GOING_AWAY,
    TRY_AGAIN_LATER,
    RealtimeSession,
    dialect_from_query,
)
from realtime.limits import RealtimeLimits
from realtime.session import StreamingSettings

log = logging.getLogger(__name__)

ENGINE_KEY: web.AppKey[EngineClient] = web.AppKey("realtime_engine", EngineClient)
LIMITS_KEY: web.AppKey[RealtimeLimits] = web.AppKey("realtime_limits", RealtimeLimits)
STREAMING_KEY: web.AppKey[StreamingSettings] = web.AppKey("realtime_streaming", StreamingSettings)
SESSIONS_KEY: web.AppKey[set[RealtimeSession]] = web.AppKey("realtime_sessions", set)
SUBPROTOCOL = "realtime"
SHUTDOWN_GRACE_S = 20.0


async def realtime_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    engine, limits = app[ENGINE_KEY], app[LIMITS_KEY]
    # compress=False declines permessage-deflate: base64 PCM barely compresses, and inflating every
    # audio frame of every session costs the event loop more than the bytes it saves.
    # timeout: how long a closing socket waits for the client's close frame.
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        max_msg_size=limits.max_message_bytes,
        heartbeat=None,
        compress=False,
        timeout=CLOSE_TIMEOUT_S,
    )
    await ws.prepare(request)
    sessions = app[SESSIONS_KEY]
    if len(sessions) >= limits.max_sessions:
        await _refuse(ws, request, engine, limits)
        return ws
    session = RealtimeSession(ws, engine, limits, app[STREAMING_KEY], request.query, request.transport)
    sessions.add(session)
    try:
        await session.run()
    except Exception:
        log.exception("realtime session %s failed", session.id)
    finally:
        sessions.discard(session)
    return ws


async def _refuse(
    ws: web.WebSocketResponse, request: web.Request, engine: EngineClient, limits: RealtimeLimits
) -> None:
    """Too many sessions: an error event in the dialect the URL implies, then close with 1013."""
    code = "too_many_sessions"
    message = f"Too many realtime sessions (the limit is {limits.max_sessions}); try again later"
    dialect, _ = dialect_from_query(request.query, engine)
    if dialect == "openai":
        event = dialect_openai.error_event(code, message, kind="server_error")
    else:
        event = dialect_vllm.error_event(code, message)
    with contextlib.suppress(Exception):
        await ws.send_str(event.model_dump_json())
        await ws.close(code=TRY_AGAIN_LATER, message=code.encode())


async def _close_sessions(app: web.Application) -> None:
    sessions = list(app[SESSIONS_KEY])
    for session in sessions:
        session.request_stop("server_shutting_down", "The server is shutting down", GOING_AWAY)
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
    while app[SESSIONS_KEY] and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def setup_realtime(
    app: web.Application, limits: RealtimeLimits, streaming: StreamingSettings | None = None
) -> None:
    """Add the /v1/realtime WebSocket route and its shutdown hook (closes sockets with 1001)."""
    app[LIMITS_KEY] = limits
    app[STREAMING_KEY] = streaming or StreamingSettings()
    app[SESSIONS_KEY] = set()
    app.router.add_get("/v1/realtime", realtime_handler)
    app.on_shutdown.append(_close_sessions)
