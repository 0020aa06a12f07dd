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
