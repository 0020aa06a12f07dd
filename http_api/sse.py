"""Server-sent events: `data: <json>\\n\\n` frames, optionally ending with `data: [DONE]`."""

from __future__ import annotations

import json

from aiohttp import web

from http_api.errors import APIError


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
