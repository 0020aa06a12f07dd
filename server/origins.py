"""The one origin policy, for the HTTP API and the /v1/realtime WebSocket alike.

A browser says which site a page came from in `Origin`. The server's own origin (its demo page: an Origin
whose host and port are the request's Host) and the origins the operator lists in --allowed-origins may
call; so may a request without Origin, which no page on another site can send. Any other Origin gets a 403
before its request runs, so a page on some other site cannot use a local server, not even with the requests
a browser sends without asking first (a form post, text/plain, a WebSocket upgrade).

Listed origins get proper CORS: a preflight (OPTIONS with Access-Control-Request-Method) is answered with
what may be sent, and every response carries Access-Control-Allow-Origin for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from http_api.errors import APIError, error_response

ANY = "*"
ALLOW_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE_S = 600
DEFAULT_PORTS = {"http": 80, "https": 443}

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def normalize_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port; None if it is not such an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username is not None:
        return None
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, DEFAULT_PORTS[scheme]) else "")


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma list of origins (or `*`), normalized; ValueError naming an entry that is not an origin."""
    origins = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        normalized = ANY if entry == ANY else normalize_origin(entry)
        if normalized is None:
            raise ValueError(f"'{entry}' is not an origin (scheme://host[:port]) or '*'")
        origins.append(normalized)
    return tuple(origins)


@dataclass(frozen=True)
class OriginPolicy:
    allowed: frozenset[str] = frozenset()  # normalized origins (parse_origins); `*` allows any

    def allows(self, origin: str, host: str) -> bool:
        """May a page from `origin` call this server, reached as `host` (the request's Host header)?"""
        if ANY in self.allowed:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False  # "null" (a sandboxed or file:// page) and anything malformed
        if normalized in self.allowed:
            return True
        scheme = normalized.partition("://")[0]
        return normalized == normalize_origin(f"{scheme}://{host}")  # the server's own page


def forbidden(origin: str) -> web.Response:
    message = (
        f"Requests from the web origin '{origin}' are not allowed. The server's operator can allow it "
        "with --allowed-origins."
    )
    return error_response(APIError(message, status=403, code="origin_not_allowed"))


def preflight(request: web.Request, origin: str) -> web.Response:
    """204 with what an allowed origin may send (the headers it asked for, its methods)."""
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ""),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        "Vary": "Origin",
    }
    return web.Response(status=204, headers=headers)


def origin_middleware(policy: OriginPolicy) -> Middleware:
    """403 for an Origin the policy refuses (before auth: a preflight carries no key); answers preflights."""

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if not policy.allows(origin, request.host):
            return forbidden(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return preflight(request, origin)
        return await handler(request)

    return check_origin


def cors_headers(policy: OriginPolicy) -> ResponseHook:
    """An on_response_prepare hook: Access-Control-Allow-Origin on every response to an allowed Origin
    (streams and WebSocket handshakes too: it runs as the headers go out)."""

    async def allow_origin(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None or not policy.allows(origin, request.host):
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin"

    return allow_origin
