"""The server-wide limits of /v1/realtime: the one set of defaults (the CLI and ServerSettings use these)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass
class RealtimeLimits:
    max_sessions: int = 8  # concurrent WebSocket sessions; more are refused with 1013
    max_session_seconds: float = 1800.0  # a session is closed (1008) after this long
    session_idle_timeout: float = 120.0  # ... or after this many seconds without a client message
    max_buffered_audio_seconds: float = 60.0  # audio held for the current turn / uncommitted buffer (1009)
    max_message_bytes: int = 16 * MiB  # a WebSocket frame larger than this closes with 1009
