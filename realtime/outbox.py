"""The one writer of a session's socket.

Events are queued synchronously (`send` never awaits), so code that updates state and emits the matching
event cannot be cancelled halfway between the two, and events leave in exactly the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 10_000  # a client this far behind is not reading; the session is closed


@dataclass
class _Close:
    code: int
    reason: str


class Outbox:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self.closing = False
        self.close_code: int | None = None

    def send(self, event: BaseModel | dict) -> None:
        if self.closing:
            return
        if self._queue.qsize() >= MAX_PENDING_EVENTS:
            log.warning("client is not reading its events; closing the session")
            self.close(1008, "client not reading events")
            return
        data = event.model_dump_json() if isinstance(event, BaseModel) else _dumps(event)
        self._queue.put_nowait(data)

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close the socket with this code."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self._queue.put_nowait(_Close(code, reason[:120]))

    async def run(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                if self.ws.closed:
                    return
                await self.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("socket write failed: %s", exc)
        finally:
            self.closing = True

    async def drain(self, timeout: float) -> None:
        """Wait until the writer has flushed everything (or give up after `timeout`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._queue.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)


def _dumps(event: dict) -> str:
    import json

    return json.dumps(event, separators=(",", ":"))
