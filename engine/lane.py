"""A lane is one kind of work in the engine: its own scheduler, runner and model.

Each step the core asks every lane for a plan (on the event loop, pure Python), runs every plan on the
one inference thread, then hands each lane back its result (on the event loop). A runner only reads
its plan and returns plain data; the scheduler alone changes scheduler state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

PlanT = TypeVar("PlanT")
ResultT = TypeVar("ResultT")


class Lane(Protocol[PlanT, ResultT]):
    name: str

    def add(self, request: Any, outputs: asyncio.Queue) -> Any:
        """Validate and queue a request (raises InvalidParameter); returns a ticket for abort()."""
        ...

    def abort(self, ticket: Any) -> None:
        """The client left: stop the request's work at the next step."""
        ...

    def schedule(self) -> PlanT | None:
        """This step's share of the work, or None when the lane has nothing to run."""
        ...

    def run(self, plan: PlanT) -> ResultT:
        """On the inference thread: tensors in, plain results out."""
        ...

    def postprocess(self, plan: PlanT, result: ResultT) -> None:
        """Back on the event loop: record the result and stream outputs to the requests."""
        ...

    def fail(self, plan: PlanT, error: BaseException) -> None:
        """run() raised: end the plan's requests with `error`; the lane and other lanes go on."""
        ...

    def fail_all(self, error: BaseException) -> None:
        """Shutdown: end every unfinished request with `error`."""
        ...

    def pending(self) -> int:
        """Requests accepted and not yet finished (graceful shutdown waits for 0)."""
        ...

    def idle_release(self) -> Callable[[], object] | None:
        """The engine has been idle a while: work for the inference thread that gives memory back."""
        ...
