"""Helpers for driving /v1/realtime through the `openai` SDK's realtime connection in tests."""

from __future__ import annotations

import asyncio

import numpy as np

from clients.realtime_client import chunks, pcm16_base64


async def send_audio(conn, audio: np.ndarray, rate: int = 24000, pace_s: float = 0.01) -> None:
    """Append `audio` (float32 at `rate`) in 100 ms events, `pace_s` apart."""
    for chunk in chunks(audio, rate, 100):
        await conn.input_audio_buffer.append(audio=pcm16_base64(chunk))
        await asyncio.sleep(pace_s)


async def next_event(conn, *types: str, timeout: float = 120.0):
    """The next event of one of `types`; fails on an error event."""

    async def wait():
        while True:
            event = await conn.recv()
            if event.type == "error":
                raise AssertionError(f"server error: {event.error}")
            if event.type in types:
                return event

    return await asyncio.wait_for(wait(), timeout)


async def next_error(conn, timeout: float = 60.0):
    """The next error event's error (other events are skipped)."""

    async def wait():
        while True:
            event = await conn.recv()
            if event.type == "error":
                return event.error

    return await asyncio.wait_for(wait(), timeout)


async def collect_until(conn, *types: str, timeout: float = 180.0) -> tuple[dict[str, object], list]:
    """Events until one of each of `types` arrived, in any order: ({type: first such event}, all events).
    Fails on an error event."""
    found: dict[str, object] = {}
    seen: list = []

    async def wait():
        while not all(t in found for t in types):
            event = await conn.recv()
            if event.type == "error":
                raise AssertionError(f"server error: {event.error}")
            seen.append(event)
            if event.type in types:
                found.setdefault(event.type, event)

    await asyncio.wait_for(wait(), timeout)
    return found, seen


class Recording:
    """An SDK realtime connection that keeps every event it receives (in `events`)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.events: list = []

    async def recv(self):
        event = await self.conn.recv()
        self.events.append(event)
        return event

    def __getattr__(self, name: str):
        return getattr(self.conn, name)
