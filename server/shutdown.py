"""Graceful shutdown (SIGTERM, Ctrl-C): accepted work finishes, then what is left ends with a clear error.

In order: the runner stops listening and closes every connection once its current request is answered, so
no new request arrives (a new connection is refused). Realtime's on_shutdown hook closes each session
after its final transcript (1001). Then this module's hook waits, within the shutdown timeout, for the HTTP
requests already accepted (a middleware counts them: a non-streaming request completes normally, a stream
ends with its last chunk and [DONE]), and drains the engine in the time left (it refuses anything new and
lets what it accepted finish). Whatever still runs at the deadline is stopped with the engine: its request
ends with a 503 (an error event on a stream) instead of being cut off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("rtserve.server")

POLL_S = 0.05


class Drainable(Protocol):
    async def drain(self, timeout_s: float) -> bool: ...

    async def stop(self) -> None: ...


@dataclass
class InFlight:
    """HTTP requests being handled (WebSocket sessions are realtime's to close)."""

    count: int = 0


def in_flight_middleware(in_flight: InFlight) -> Middleware:
    @web.middleware
    async def count_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        in_flight.count += 1
        try:
            return await handler(request)
        finally:
            in_flight.count -= 1

    return count_in_flight


def drain_on_shutdown(
    in_flight: InFlight, timeout_s: float, engine_of: Callable[[web.Application], Drainable | None]
) -> Callable[[web.Application], Awaitable[None]]:
    """The on_shutdown hook: wait for accepted requests within `timeout_s`, then stop what is left."""

    async def drain(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if in_flight.count:
            log.info("shutting down: letting %d request(s) finish (up to %.0f s)", in_flight.count, timeout_s)
        while in_flight.count and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        engine = engine_of(app)
        if engine is None:
            return
        if not await engine.drain(max(0.0, deadline - loop.time())):
            log.warning("shutting down: work still running after %.0f s ends with an error", timeout_s)
            await engine.stop()

    return drain
