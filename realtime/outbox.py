"""The one writer of a session's socket.

Events are queued synchronously (`send` never awaits and never raises), so code that updates state and
emits the matching event cannot be cancelled halfway between the two, and events leave in exactly the order
they were made. An event that cannot be encoded is logged and replaced by an error event: it never ends the
session. A client that falls too far behind (it is not reading) has its session closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 10_000  # a client this far behind is not reading; the session is closed
MAX_PENDING_BYTES = 16 * 1024 * 1024  # ... or this much JSON text behind (echoed instructions, prompts)
POLICY_VIOLATION = 1008

Event = BaseModel | dict
ErrorRenderer = Callable[[str, str], Event]  # (code, message) -> the session's error event


@dataclass
class _Close:
    code: int
    reason: str


def _plain_error(code: str, message: str) -> Event:
    return {"type": "error", "error": message, "code": code}


class Outbox:
    def __init__(self, ws: web.WebSocketResponse, render_error: ErrorRenderer = _plain_error) -> None:
        self.ws = ws
        self.render_error = render_error
        self._queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self._pending_bytes = 0
        self.closing = False
        self.close_code: int | None = None

    def send(self, event: Event) -> None:
        if self.closing:
            return
        if self._queue.qsize() >= MAX_PENDING_EVENTS or self._pending_bytes > MAX_PENDING_BYTES:
            log.warning("client is not reading its events; closing the session")
            self.close(POLICY_VIOLATION, "client not reading events")
            return
        data = self._encode(event)
        self._pending_bytes += len(data)
        self._queue.put_nowait(data)

    def _encode(self, event: Event) -> str:
        try:
            return _dumps(event)
        except Exception:  # e.g. a string that is not valid Unicode: report it, keep the session
            kind = type(event).__name__ if isinstance(event, BaseModel) else str(event.get("type"))
            log.exception("could not encode a %s event; sending an error event instead", kind)
        return _dumps(
            self.render_error("event_not_sent", "The server could not encode an event; it was not sent")
        )

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
                self._pending_bytes -= len(item)
                if self.ws.closed:
                    return
                await self.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("socket write failed: %s", exc)
        finally:
            self.closing = True


def _dumps(event: Event) -> str:
    if isinstance(event, BaseModel):
        return event.model_dump_json()
    return json.dumps(event, separators=(",", ":"))
