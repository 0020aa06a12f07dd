"""Registers the HTTP API (OpenAI, SGLang /generate, meta routes and the demo page) on an app.

The app that hosts these routes provides the engine under `app_keys.ENGINE_KEY` before it starts serving,
and puts `errors.error_middleware` in its middlewares so every failure leaves in the OpenAI error shape.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from http_api import routes_audio, routes_chat, routes_completions, routes_generate, routes_meta
from http_api.app_keys import GAUGES_KEY, SETTINGS_KEY
from http_api.demo_page import setup_demo_routes
from http_api.limits import HTTPLimits
from http_api.metrics import Gauge
from http_api.request_id import echo_request_id
from http_api.routes_lora import add_lora_routes
from http_api.routes_pooling import add_pooling_routes
from http_api.routes_responses import add_responses_routes
from http_api.routes_speech import create_speech


def add_http_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", routes_chat.chat_completions)
    app.router.add_post("/v1/completions", routes_completions.completions)
    app.router.add_post("/generate", routes_generate.generate)
    app.router.add_post("/v1/audio/transcriptions", routes_audio.transcriptions)
    app.router.add_post("/v1/audio/translations", routes_audio.translations)
    app.router.add_post("/v1/audio/speech", create_speech)
    app.router.add_get("/v1/models", routes_meta.list_models)
    app.router.add_get("/v1/models/{model}", routes_meta.get_model)
    app.router.add_get("/health", routes_meta.health)
    app.router.add_get("/version", routes_meta.version)
    app.router.add_get("/metrics", routes_meta.prometheus)
    app.router.add_post("/tokenize", routes_meta.tokenize)
    app.router.add_post("/detokenize", routes_meta.detokenize)
    add_pooling_routes(app)  # /v1/embeddings, /pooling, /classify, /score, /rerank
    add_lora_routes(app)  # /v1/load_lora_adapter, /load_lora_adapter and the unloads
    add_responses_routes(app, app.get(SETTINGS_KEY) or HTTPLimits())  # /v1/responses[/{id}[/cancel]]


def setup_http_api(app: web.Application, limits: HTTPLimits, gauges: Sequence[Gauge] = ()) -> None:
    """Add every HTTP route and the demo page (GET /, /static/), enforcing `limits`. `gauges`: extra
    gauges for /metrics, from the app that hosts the API."""
    app[SETTINGS_KEY] = limits
    app[GAUGES_KEY] = tuple(gauges)
    add_http_routes(app)
    app.on_response_prepare.append(echo_request_id)
    setup_demo_routes(app)
