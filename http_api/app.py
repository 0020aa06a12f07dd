"""The aiohttp application: routes, middlewares, and the engine's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from http_api import routes_audio, routes_chat, routes_completions, routes_generate, routes_meta
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY, ServerSettings
from http_api.auth import auth_middleware
from http_api.demo_page import setup_demo_routes
from http_api.errors import error_middleware
from realtime.routes import setup_realtime_routes

log = logging.getLogger("rtserve.http")


def engine_context(config: EngineConfig, engine: AsyncEngine | None):
    async def run_engine(app: web.Application) -> AsyncIterator[None]:
        loaded = engine
        if loaded is None:
            log.info("loading models: llm=%s asr=%s", config.llm, ",".join(config.asr))
            loaded = await asyncio.get_running_loop().run_in_executor(None, AsyncEngine.load, config)
        await loaded.start()
        app[ENGINE_KEY] = loaded
        log.info("engine running on %s", getattr(loaded, "device", "?"))
        yield
        await loaded.stop()

    return run_engine


async def abort_in_flight(app: web.Application) -> None:
    """On shutdown, stop the engine before aiohttp waits on open handlers: each in-flight request then ends
    now with a 503 (an error event on a stream) instead of running on until the shutdown timeout cuts it.
    Registered after the realtime routes, so their sockets close with 1001 first."""
    engine = app.get(ENGINE_KEY)
    if engine is not None:
        await engine.stop()


def add_http_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", routes_chat.chat_completions)
    app.router.add_post("/v1/completions", routes_completions.completions)
    app.router.add_post("/generate", routes_generate.generate)
    app.router.add_post("/v1/audio/transcriptions", routes_audio.transcriptions)
    app.router.add_post("/v1/audio/translations", routes_audio.translations)
    app.router.add_get("/v1/models", routes_meta.list_models)
    app.router.add_get("/v1/models/{model}", routes_meta.get_model)
    app.router.add_get("/health", routes_meta.health)
    app.router.add_get("/version", routes_meta.version)
    app.router.add_get("/metrics", routes_meta.prometheus)
    app.router.add_post("/tokenize", routes_meta.tokenize)
    app.router.add_post("/detokenize", routes_meta.detokenize)


def create_app(
    config: EngineConfig,
    *,
    settings: ServerSettings | None = None,
    api_key: str | None = None,
    max_audio_bytes: int | None = None,
    engine: AsyncEngine | None = None,
) -> web.Application:
    """`settings` holds every server option; `api_key` and `max_audio_bytes` override it.

    `engine`: an already-loaded engine (tests); otherwise the models load at startup, off the event loop.
    """
    settings = settings or ServerSettings()
    if api_key is not None:
        settings = replace(settings, api_key=api_key)
    if max_audio_bytes is not None:
        settings = replace(settings, max_audio_bytes=max_audio_bytes)
    # client_max_size caps JSON bodies (request.read()); uploads stream part by part against max_audio_bytes.
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=settings.max_json_bytes
    )
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(engine_context(config, engine))
    add_http_routes(app)
    setup_realtime_routes(app)
    setup_demo_routes(app)
    app.on_shutdown.append(abort_in_flight)
    return app
