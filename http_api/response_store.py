"""Stored responses, for GET /v1/responses/{id}, previous_response_id and background runs.

In memory and bounded twice: at most `max_entries` responses (the oldest go first) and none older than
`ttl_s` seconds. Each entry holds one conversation, which fit the model's context, so the store's memory is
bounded too. A background response still running when it is evicted or deleted is cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from http_api.protocol_openai.responses_output import ResponseObject


@dataclass
class StoredResponse:
    body: ResponseObject
    # The conversation through this response's output, as template messages, without its instructions
    # (a later turn brings its own): what a request naming it as previous_response_id continues.
    messages: list[dict[str, Any]]
    stored_at: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)  # a background run

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class ResponseStore:
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def put(self, entry: StoredResponse) -> None:
        """Store (or replace) a response; the oldest make room."""
        entry.stored_at = self._clock()
        rid = entry.body.id
        old = self._entries.pop(rid, None)
        if old is not None and old is not entry:
            old.cancel()
        self._entries[rid] = entry
        self._expire()
        while len(self._entries) > self.max_entries:
            _, evicted = self._entries.popitem(last=False)
            evicted.cancel()

    def get(self, rid: str) -> StoredResponse | None:
        self._expire()
        return self._entries.get(rid)

    def delete(self, rid: str) -> StoredResponse | None:
        entry = self._entries.pop(rid, None)
        if entry is not None:
            entry.cancel()
        return entry

    def cancel_all(self) -> None:
        """At shutdown: end every background run."""
        for entry in self._entries.values():
            entry.cancel()

    def _expire(self) -> None:
        oldest_kept = self._clock() - self.ttl_s
        while self._entries:
            rid, entry = next(iter(self._entries.items()))
            if entry.stored_at >= oldest_kept:
                return
            del self._entries[rid]
            entry.cancel()
