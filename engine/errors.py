"""Typed errors the engine raises for a request, so front ends never parse message text."""

from __future__ import annotations


class InvalidParameter(ValueError):
    """A request field the engine cannot accept. `param` names it as the request spelled it (or the
    engine-side name, which the front end may map to its own spelling)."""

    def __init__(self, param: str | None, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code

    def __reduce__(self) -> tuple[type[InvalidParameter], tuple[str | None, str, str]]:
        return InvalidParameter, (self.param, self.message, self.code)  # pickled as sent (Ray replicas)


class EngineStoppedError(RuntimeError):
    """The engine is not running (not started yet, or shutting down)."""


class EngineReplicaLostError(EngineStoppedError):
    """The engine replica running a request died after its output had begun (engine/remote/): the
    request ends with this; the next one goes to a healthy replica."""


class EngineOverloadedError(RuntimeError):
    """Every engine replica is busy and the queue in front of them is full: try again later (a 503)."""
