"""Server-sent events: `data: <json>\\n\\n` frames, optionally ending with `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from http_api.errors import APIError

log = logging.getLogger("rtserve.http")


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tell proxies not to buffer the stream
        }
    )
    await response.prepare(request)
    return response


async def send(response: web.StreamResponse, data: dict) -> None:
    await response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")


async def send_done(response: web.StreamResponse) -> None:
    await response.write(b"data: [DONE]\n\n")


async def send_error(response: web.StreamResponse, error: APIError) -> None:
    """After the headers are out an error can only travel as an event; the openai SDK raises on it."""
    try:
        await send(response, error.body())
    except ConnectionResetError:
        pass  # the client is already gone


@asynccontextmanager
async def reporting_errors(response: web.StreamResponse, what: str) -> AsyncIterator[None]:
    """Inside an open stream: a gone client ends it quietly, anything else becomes an error event."""
    try:
        yield
    except ConnectionResetError:
        pass
    except APIError as exc:
        await send_error(response, exc)
    except Exception:
        log.exception("%s stream failed", what)
        await send_error(
            response, APIError("The server had an internal error", status=500, code="internal_error")
        )
