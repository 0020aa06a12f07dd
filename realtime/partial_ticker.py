"""Server-wide policy for partial (preview) decodes, shared by every session.

Finals first: while any session's end-of-turn decode runs, no new partial starts (partials are only
previews; the end-of-turn latency is what users wait on). With `align`, due partials of every session
start together on a shared clock so they reach the engine in one step and decode as one batch. That pays
off where batching is cheap (a GPU); on a small CPU the Whisper encoder costs the same per window batched
or not, and one big batch stalls the finals behind it, so it is off by default.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class PartialTicker:
    def __init__(self, interval_s: float, align: bool = False) -> None:
        self.interval_s = interval_s
        self.align = align
        self._due: dict[int, Callable[[], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.finals_in_flight = 0

    def request(self, key: int, launch: Callable[[], None]) -> None:
        """Run `launch` now, or with `align` at the next tick (once per key per tick)."""
        if not self.align:
            launch()
            return
        self._due[key] = launch
        if self._timer is None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            tick = math.floor(now / self.interval_s + 1) * self.interval_s
            self._timer = loop.call_at(tick, self._fire)

    def cancel(self, key: int) -> None:
        self._due.pop(key, None)

    def _fire(self) -> None:
        self._timer = None
        due, self._due = self._due, {}
        for launch in due.values():
            launch()
