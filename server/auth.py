"""The one API-key check, for every route: the HTTP API and the /v1/realtime WebSocket upgrade alike.

A request carries the key as `Authorization: Bearer KEY` (the scheme in any case). A WebSocket upgrade may
instead offer the `openai-insecure-api-key.KEY` subprotocol, since browsers cannot set headers on one.
/, /static/, /health and /metrics stay open.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from http_api.errors import APIError, error_response

OPEN_PATHS = frozenset({"/", "/health", "/metrics"})
OPEN_PREFIXES = ("/static/",)
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."

MISSING_KEY = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
WRONG_KEY = "Incorrect API key provided."
WEBSOCKET_KEY = (
    "Invalid or missing API key. Send `Authorization: Bearer <key>` or the "
    "`openai-insecure-api-key.<key>` WebSocket subprotocol."
)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def as_bytes(text: str) -> bytes:
    """Any str as bytes, one to one. Header bytes that are not UTF-8 reach us as lone surrogates (aiohttp
    decodes with surrogateescape), which a plain .encode() refuses; surrogatepass takes every str."""
    return text.encode("utf-8", "surrogatepass")


def key_matches(offered: str, api_key: str) -> bool:
    """Constant-time, on bytes (compare_digest refuses non-ASCII str), for whatever the header held."""
    return hmac.compare_digest(as_bytes(offered), as_bytes(api_key))


def bearer_matches(header: str, api_key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and key_matches(token.strip(), api_key)


def subprotocol_matches(header: str, api_key: str) -> bool:
    """`Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.KEY` carries the key."""
    offered = (p.strip() for p in header.split(","))
    return any(
        p.startswith(KEY_SUBPROTOCOL_PREFIX) and key_matches(p[len(KEY_SUBPROTOCOL_PREFIX) :], api_key)
        for p in offered
    )


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def unauthorized(request: web.Request) -> web.Response:
    """401 in the OpenAI error shape, saying what was missing or wrong."""
    if is_websocket_upgrade(request):
        message = WEBSOCKET_KEY
    elif not request.headers.get("Authorization"):
        message = MISSING_KEY
    else:
        message = WRONG_KEY
    error = APIError(message, status=401, code="invalid_api_key")
    return error_response(error, headers={"WWW-Authenticate": "Bearer"})


def authorized(request: web.Request, api_key: str) -> bool:
    if bearer_matches(request.headers.get("Authorization", ""), api_key):
        return True
    protocols = request.headers.get("Sec-WebSocket-Protocol", "")
    return is_websocket_upgrade(request) and subprotocol_matches(protocols, api_key)


def auth_middleware(api_key: str) -> Middleware:
    """A middleware that lets a request through only with `api_key` (open paths excepted)."""

    @web.middleware
    async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request.path) or authorized(request, api_key):
            return await handler(request)
        return unauthorized(request)

    return require_api_key
