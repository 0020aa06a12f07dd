"""Every server option in one place: what is server-wide (the API key, the origin policy, shutdown) plus
each front end's own limits (one set of defaults, owned by the front end that enforces them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from http_api.limits import HTTPLimits
from realtime.limits import RealtimeLimits


@dataclass
class ServerSettings:
    api_key: str | None = None  # None: no auth
    # Origins (server.origins.parse_origins: normalized, or "*") whose pages may call the API and open
    # /v1/realtime, besides the server's own page; requests without an Origin are not from a page.
    allowed_origins: tuple[str, ...] = ()
    shutdown_timeout: float = 30.0  # seconds accepted requests get to finish on SIGTERM / Ctrl-C
    http: HTTPLimits = field(default_factory=HTTPLimits)
    realtime: RealtimeLimits = field(default_factory=RealtimeLimits)
