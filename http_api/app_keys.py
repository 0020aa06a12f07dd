"""What the HTTP routes need from the app that hosts them: the engine, the HTTP limits and any extra gauges.

The composition root (server/app.py) fills them: `setup_http_api` stores the limits and the gauges, the
engine's startup context stores the engine.
"""

from __future__ import annotations

from aiohttp import web

from engine.interface import EngineClient
from http_api.limits import HTTPLimits
from http_api.metrics import Gauge

ENGINE_KEY: web.AppKey[EngineClient] = web.AppKey("http_api_engine", EngineClient)
SETTINGS_KEY: web.AppKey[HTTPLimits] = web.AppKey("http_api_limits", HTTPLimits)
GAUGES_KEY: web.AppKey[tuple[Gauge, ...]] = web.AppKey("http_api_gauges", tuple)
