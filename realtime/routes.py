"""Registers /v1/realtime: auth, the session limit, and closing every session on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from aiohttp import web

from realtime import protocol_openai as oa
from realtime import protocol_vllm as vl
from realtime.handler import GOING_AWAY, TRY_AGAIN_LATER, RealtimeSession, dialect_from_query
from realtime.partial_ticker import PartialTicker
from realtime.session import RealtimeLimits, StreamingSettings

log = logging.getLogger(__name__)

SESSIONS_KEY: web.AppKey[set[RealtimeSession]] = web.AppKey("realtime_sessions", set)
STREAMING_KEY: web.AppKey[StreamingSettings] = web.AppKey("realtime_streaming", StreamingSettings)
TICKER_KEY: web.AppKey[PartialTicker] = web.AppKey("realtime_partial_ticker", PartialTicker)
SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
SHUTDOWN_GRACE_S = 20.0


def _engine(app: web.Application):
    from http_api.app_keys import ENGINE_KEY

    return app[ENGINE_KEY]


def _settings(app: web.Application):
    try:
        from http_api.app_keys import SETTINGS_KEY
    except ImportError:
        return None
    return app.get(SETTINGS_KEY)


def _limits(app: web.Application) -> RealtimeLimits:
    return RealtimeLimits.from_settings(_settings(app))


def _authorized(request: web.Request, api_key: str | None) -> bool:
    if not api_key:
        return True
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), api_key):
        return True
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    return any(
        p.startswith(KEY_SUBPROTOCOL_PREFIX)
        and hmac.compare_digest(p[len(KEY_SUBPROTOCOL_PREFIX) :], api_key)
        for p in offered
    )


async def realtime_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = _settings(app)
    if not _authorized(request, getattr(settings, "api_key", None)):
        body = {
            "error": {
                "message": "Invalid or missing API key. Send `Authorization: Bearer <key>` or the "
                "`openai-insecure-api-key.<key>` WebSocket subprotocol.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        return web.json_response(body, status=401)
    engine = _engine(app)
    limits = _limits(app)
    # compress=False declines permessage-deflate: base64 PCM barely compresses, and inflating every
    # audio frame of every session costs the event loop more than the bytes it saves.
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,), max_msg_size=limits.max_message_bytes, heartbeat=None, compress=False
    )
    await ws.prepare(request)
    sessions = app[SESSIONS_KEY]
    if len(sessions) >= limits.max_sessions:
        message = f"Too many realtime sessions (the limit is {limits.max_sessions}); try again later"
        dialect, _ = dialect_from_query(request.query, engine)
        if dialect == "openai":
            event = oa.ErrorEvent(
                error=oa.ErrorDetail(type="server_error", code="too_many_sessions", message=message)
            )
        else:
            event = vl.ErrorEvent(error=message, code="too_many_sessions")
        with contextlib.suppress(Exception):
            await ws.send_str(event.model_dump_json())
            await ws.close(code=TRY_AGAIN_LATER, message=b"too_many_sessions")
        return ws
    session = RealtimeSession(ws, engine, limits, app[STREAMING_KEY], request.query, app[TICKER_KEY])
    sessions.add(session)
    try:
        await session.run()
    except Exception:
        log.exception("realtime session %s failed", session.id)
    finally:
        sessions.discard(session)
    return ws


async def _close_sessions(app: web.Application) -> None:
    sessions = list(app[SESSIONS_KEY])
    for session in sessions:
        session.request_stop("server_shutting_down", "The server is shutting down", GOING_AWAY)
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
    while app[SESSIONS_KEY] and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def setup_realtime_routes(app: web.Application) -> None:
    """Add the /v1/realtime WebSocket route and its shutdown hook (closes sockets with 1001)."""
    app[SESSIONS_KEY] = set()
    if STREAMING_KEY not in app:
        app[STREAMING_KEY] = StreamingSettings()
    streaming = app[STREAMING_KEY]
    app[TICKER_KEY] = PartialTicker(streaming.partial_interval_s, streaming.align_partials)
    app.router.add_get("/v1/realtime", realtime_handler)
    app.on_shutdown.append(_close_sessions)
