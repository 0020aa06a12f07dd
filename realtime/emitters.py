"""Dialect-specific rendering of what a session has to say (transcripts, turns, errors)."""

from __future__ import annotations

from realtime import protocol_openai as oa
from realtime import protocol_vllm as vl
from realtime.outbox import Outbox
from realtime.session import SessionConfig
from realtime.transcriber import TurnTranscriber

# Whisper's encoder emits 50 positions per second of audio; reported as the audio's "prompt tokens".
ENCODER_POSITIONS_PER_SECOND = 50


class Emitter:
    """What both dialects can say. Events that a dialect lacks are silently not sent."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def error(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> None:
        raise NotImplementedError

    def session_updated(self, session_id: str, config: SessionConfig) -> None:
        pass

    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        pass

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        pass

    def committed(self, item_id: str, previous_item_id: str | None) -> None:
        pass

    def cleared(self) -> None:
        pass

    def transcript_delta(self, item_id: str, delta: str) -> None:
        raise NotImplementedError

    def transcript_done(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        raise NotImplementedError

    def transcript_failed(self, item_id: str, message: str) -> None:
        raise NotImplementedError


class VllmEmitter(Emitter):
    def error(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> None:
        self.outbox.send(vl.ErrorEvent(error=message, code=code))

    def transcript_delta(self, item_id: str, delta: str) -> None:
        self.outbox.send(vl.TranscriptionDelta(delta=delta))

    def transcript_done(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        prompt = round(turn.seconds * ENCODER_POSITIONS_PER_SECOND)
        usage = vl.UsageInfo(
            prompt_tokens=prompt,
            completion_tokens=turn.decoded_tokens,
            total_tokens=prompt + turn.decoded_tokens,
        )
        self.outbox.send(vl.TranscriptionDone(text=transcript, usage=usage))

    def transcript_failed(self, item_id: str, message: str) -> None:
        self.error("processing_error", message)


class OpenAIEmitter(Emitter):
    def error(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> None:
        detail = oa.ErrorDetail(
            type=kind or "invalid_request_error", code=code, message=message, param=param, event_id=event_id
        )
        self.outbox.send(oa.ErrorEvent(error=detail))

    def session_created(self, session_id: str, config: SessionConfig) -> None:
        self.outbox.send(oa.SessionCreatedEvent(session=config.to_openai(session_id)))

    def session_updated(self, session_id: str, config: SessionConfig) -> None:
        self.outbox.send(oa.SessionUpdatedEvent(session=config.to_openai(session_id)))

    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self.outbox.send(oa.SpeechStartedEvent(audio_start_ms=audio_start_ms, item_id=item_id))

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        self.outbox.send(oa.SpeechStoppedEvent(audio_end_ms=audio_end_ms, item_id=item_id))

    def committed(self, item_id: str, previous_item_id: str | None) -> None:
        self.outbox.send(oa.CommittedEvent(item_id=item_id, previous_item_id=previous_item_id))

    def cleared(self) -> None:
        self.outbox.send(oa.ClearedEvent())

    def transcript_delta(self, item_id: str, delta: str) -> None:
        self.outbox.send(oa.TranscriptionDeltaEvent(item_id=item_id, delta=delta))

    def transcript_done(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        usage = oa.TranscriptionUsageDuration(seconds=round(turn.seconds, 3))
        self.outbox.send(oa.TranscriptionCompletedEvent(item_id=item_id, transcript=transcript, usage=usage))

    def transcript_failed(self, item_id: str, message: str) -> None:
        detail = oa.ErrorDetail(type="server_error", code="transcription_failed", message=message)
        self.outbox.send(oa.TranscriptionFailedEvent(item_id=item_id, error=detail))
