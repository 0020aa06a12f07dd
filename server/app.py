"""The aiohttp application: one engine, served by the HTTP API and the /v1/realtime WebSocket.

The front ends are peers that never see each other: each declares what it needs (its own app keys and a
setup function), and this module hands both the one engine and their settings. What is server-wide lives
here: the middlewares (errors, the in-flight count, the origin policy, the API key) and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from engine.config import EngineConfig
from engine.core import Engine
from engine.interface import EngineClient
from http_api import app_keys as http_keys
from http_api.errors import error_middleware
from http_api.metrics import Gauge
from http_api.routes import setup_http_api
from realtime import routes as realtime_routes
from server.auth import auth_middleware
from server.origins import OriginPolicy, cors_headers, origin_middleware
from server.settings import ServerSettings
from server.shutdown import InFlight, drain_on_shutdown, in_flight_middleware

log = logging.getLogger("rtserve.server")


class ServedEngine(EngineClient, Protocol):
    """What the front ends see, plus the lifetime this module owns."""

    async def start(self) -> None: ...

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests; True once every accepted one has finished, False at the timeout."""
        ...

    async def stop(self) -> None: ...


ENGINE_KEY: web.AppKey[ServedEngine] = web.AppKey("server_engine", ServedEngine)

EngineContext = Callable[[web.Application], AsyncIterator[None]]


def engine_context(config: EngineConfig, engine: ServedEngine | None) -> EngineContext:
    """Load (off the event loop) and start the engine at startup, hand it to both front ends, stop it last."""

    async def run_engine(app: web.Application) -> AsyncIterator[None]:
        loaded: ServedEngine | None = engine
        if loaded is None:
            models = f"llm={config.llm} asr={','.join(config.asr)} embed={','.join(config.embed)}"
            log.info("loading models: %s", models)
            loaded = await asyncio.get_running_loop().run_in_executor(None, Engine.load, config)
        await loaded.start()
        app[ENGINE_KEY] = loaded
        app[http_keys.ENGINE_KEY] = loaded
        app[realtime_routes.ENGINE_KEY] = loaded
        log.info("engine running on %s", loaded.device)
        yield
        await loaded.stop()

    return run_engine


def realtime_sessions(app: web.Application) -> Gauge:
    """/metrics' count of open realtime sessions (the HTTP API shows it without importing realtime)."""
    return Gauge(
        "realtime_sessions", "Open /v1/realtime sessions", lambda: len(app[realtime_routes.SESSIONS_KEY])
    )


def create_app(
    config: EngineConfig, *, settings: ServerSettings | None = None, engine: ServedEngine | None = None
) -> web.Application:
    """`settings`: every server option (defaults if None). `engine`: an engine to start instead (tests, or
    the Ray Serve replicas of `--ray`); otherwise the models load at startup, off the event loop."""
    settings = settings or ServerSettings()
    in_flight = InFlight()
    origins = OriginPolicy(frozenset(settings.allowed_origins))
    # In order: every failure as an OpenAI error; count accepted requests (shutdown waits for them); refuse
    # other sites' pages (before auth: a CORS preflight carries no key); then the key.
    middlewares: list[Middleware] = [
        error_middleware,
        in_flight_middleware(in_flight),
        origin_middleware(origins),
    ]
    if settings.api_key is not None:
        middlewares.append(auth_middleware(settings.api_key))
    # client_max_size caps JSON bodies (request.read()); uploads stream part by part against max_audio_bytes.
    app = web.Application(middlewares=middlewares, client_max_size=settings.http.max_json_bytes)
    app.on_response_prepare.append(cors_headers(origins))
    app.cleanup_ctx.append(engine_context(config, engine))
    setup_http_api(app, settings.http, gauges=[realtime_sessions(app)])
    realtime_routes.setup_realtime(app, settings.realtime)
    # Shutdown hooks run in order: realtime sessions close with 1001 after their final text (its hook, added
    # above), then accepted HTTP requests and engine work get settings.shutdown_timeout to finish.
    app.on_shutdown.append(
        drain_on_shutdown(in_flight, settings.shutdown_timeout, lambda a: a.get(ENGINE_KEY))
    )
    return app
