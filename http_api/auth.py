"""Bearer-token auth for the HTTP API (the realtime route checks its own, header or subprotocol)."""

from __future__ import annotations

import hmac

from aiohttp import web

from http_api.app_keys import SETTINGS_KEY
from http_api.errors import APIError, Handler, error_response

OPEN_PATHS = frozenset({"/", "/health", "/metrics"})
OPEN_PREFIXES = ("/static/", "/v1/realtime")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_matches(header: str, api_key: str) -> bool:
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    api_key = request.app[SETTINGS_KEY].api_key
    if api_key is None or is_open(request.path):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header:
        message = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    elif not bearer_matches(header, api_key):
        message = "Incorrect API key provided."
    else:
        return await handler(request)
    error = APIError(message, status=401, code="invalid_api_key")
    return error_response(error, headers={"WWW-Authenticate": "Bearer"})
