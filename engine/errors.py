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


class EngineStoppedError(RuntimeError):
    """The engine is not running (not started yet, or shutting down)."""
