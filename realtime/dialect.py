"""What a dialect module provides: one protocol's wire events in, session calls made, results out as wire events.

realtime/handler.py reads frames and hands each parsed event to the session's Dialect; the dialect drives
the session's AudioInput (and, for OpenAI, its Conversation) and is the AudioInput's TurnListener, so what
a turn produces goes straight back out in the dialect's own events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.interface import EngineClient
from realtime.audio_input import AudioInput, TurnMode
from realtime.outbox import Outbox
from realtime.session import SessionConfig, StreamingSettings
from realtime.transcriber import TurnTranscriber


class InboundError(BaseModel):
    """A client frame that could not be parsed; reported by the work task in arrival order."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


def validate_event(model: type[BaseModel], data: dict[str, Any], event_id: str | None) -> BaseModel:
    """The typed event, or an InboundError naming the first invalid field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        return InboundError(
            code="invalid_value",
            message=f"Invalid `{data['type']}` event: {param}: {first['msg']}",
            param=param,
            event_id=event_id,
        )


class Dialect(ABC):
    """One session's protocol. Subclasses parse and apply client events and render the session's results."""

    def __init__(
        self,
        session_id: str,
        outbox: Outbox,
        engine: EngineClient,
        streaming: StreamingSettings,
        config: SessionConfig,
        mode: TurnMode,
    ) -> None:
        self.session_id = session_id
        self.outbox = outbox
        self.engine = engine
        self.config = config
        self.audio = AudioInput(config, mode, self, engine, streaming)

    @abstractmethod
    def parse(self, event_type: str, data: dict[str, Any], event_id: str | None) -> BaseModel:
        """A client event (a JSON object with a string `type`) as this dialect's typed event or an
        InboundError. Runs on the receive task: it must not change the session."""

    @abstractmethod
    def handle(self, event: BaseModel) -> None:
        """Apply one parsed client event (on the work task, in arrival order)."""

    @abstractmethod
    def error_event(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> BaseModel:
        """This dialect's error event. `kind`: OpenAI's error type (default invalid_request_error)."""

    def error(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> None:
        """Send an error event (see error_event)."""
        self.outbox.send(self.error_event(code, message, param, event_id, kind))

    def report(self, error: InboundError) -> None:
        self.error(error.code, error.message, error.param, error.event_id)

    async def flush(self) -> None:
        """End the turn in progress and wait until every transcript has been sent (the session closes)."""
        await self.audio.flush()

    async def close(self) -> None:
        """Abort whatever still runs for this session."""
        await self.audio.close()

    # ---- TurnListener (called by AudioInput) ----

    @abstractmethod
    def speech_started(self, item_id: str, audio_start_ms: int) -> None: ...

    @abstractmethod
    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None: ...

    @abstractmethod
    def committed(self, item_id: str) -> None: ...

    @abstractmethod
    def delta(self, item_id: str, text: str) -> None: ...

    @abstractmethod
    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None: ...

    @abstractmethod
    def transcription_failed(self, item_id: str, error: BaseException) -> None: ...

    def timeout_triggered(self, item_id: str, audio_start_ms: int, audio_end_ms: int) -> None:
        """server_vad's idle timeout fired (OpenAI only); the silent turn is committed next."""
        return None
