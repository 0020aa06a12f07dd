"""Typed keys for what the app shares with every route module (HTTP, realtime, demo)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from engine.async_engine import AsyncEngine

MiB = 1024 * 1024


@dataclass
class ServerSettings:
    api_key: str | None = None  # None: no auth
    max_audio_bytes: int = 25 * MiB  # upload limit for /v1/audio/*
    max_json_bytes: int = 8 * MiB  # limit for JSON request bodies
    # Realtime (/v1/realtime) limits, enforced by realtime/*.
    max_sessions: int = 8  # concurrent WebSocket sessions
    max_session_seconds: float = 1800.0  # a session is closed after this long
    session_idle_timeout: float = 120.0  # ... or after this long without a client message
    max_buffered_audio_seconds: float = 60.0  # uncommitted input audio kept per session


ENGINE_KEY = web.AppKey("engine", AsyncEngine)
SETTINGS_KEY = web.AppKey("settings", ServerSettings)
