"""vLLM's realtime dialect: its events (realtime/protocol_vllm.py) to session calls, and turns back to events.

One turn at a time, streamed: `session.update {model}` picks the model (optional: the default otherwise), `commit` starts streaming partials,
appends add audio, `commit {final: true}` ends the turn; `transcription.delta`s then `transcription.done`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from realtime import protocol_vllm as vl
from realtime.audio_input import AudioPayloadError
from realtime.dialect import Dialect, InboundError, validate_event
from realtime.outbox import Outbox
from realtime.session import SessionConfig, StreamingSettings, resolve_asr_model
from realtime.transcriber import TurnTranscriber

# Whisper's encoder emits 50 positions per second of audio; reported as the audio's "prompt tokens".
ENCODER_POSITIONS_PER_SECOND = 50


def error_event(code: str, message: str) -> vl.ErrorEvent:
    return vl.ErrorEvent(error=message, code=code)


class VllmDialect(Dialect):
    def __init__(
        self, session_id: str, outbox: Outbox, engine: EngineClient, streaming: StreamingSettings
    ) -> None:
        config = SessionConfig(
            asr_model=next(iter(engine.asr_models), ""),
            encoding="pcm16",
            input_rate=vl.WIRE_SAMPLE_RATE,
            vad=None,
        )
        super().__init__(session_id, outbox, engine, streaming, config, "stream")
        # session.update {model} is optional, as in vLLM's documented client: without it the default
        # (first) speech model transcribes.
        self.model_validated = False  # session.update {model} seen

    def parse(self, event_type: str, data: dict[str, Any], event_id: str | None) -> BaseModel:
        model = vl.CLIENT_EVENTS.get(event_type)
        if model is None:
            return InboundError(
                code="unknown_event",
                message=f"Unknown event type: {event_type}",
                param="type",
                event_id=event_id,
            )
        if event_type == "session.update" and "session" in data:
            return InboundError(
                code="invalid_event",
                message="This session speaks vLLM's dialect: `session.update` takes a flat `model`, not an "
                "OpenAI `session` object (connect with ?intent=transcription, or send an OpenAI "
                "session.update first, to speak OpenAI's)",
                param="session",
                event_id=event_id,
            )
        return validate_event(model, data, event_id)

    def error_event(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
    ) -> BaseModel:
        return error_event(code, message)

    # ---- client events ----

    def handle(self, event: BaseModel) -> None:
        if isinstance(event, vl.SessionUpdate):
            self._session_update(event)
        elif isinstance(event, vl.InputAudioBufferAppend):
            self._append(event.audio)
        elif isinstance(event, vl.InputAudioBufferCommit):
            self._commit(event.final)

    def _session_update(self, event: vl.SessionUpdate) -> None:
        try:
            model = resolve_asr_model(event.model, self.engine.asr_models, "model")
        except InvalidParameter as exc:
            self.error(exc.code, exc.message)
            return
        self.config = replace(self.config, asr_model=model)
        self.audio.apply_config(self.config, "stream")
        self.model_validated = True

    def _append(self, payload: str) -> None:
        try:
            samples = self.audio.to_samples(payload)
        except AudioPayloadError as exc:
            self.error("invalid_audio", str(exc))
            return
        self.audio.append(samples)

    def _commit(self, final: bool) -> None:
        if not self.model_validated and not self.config.asr_model:
            self.error(
                "model_not_validated",
                "This server has no speech recognition model; no session.update can select one.",
            )
        elif not final:
            self.audio.start_stream()
        else:
            error = self.audio.finish_stream()
            if error:
                self.error("input_audio_buffer_commit_empty", error)

    # ---- what the turns produce ----

    # vLLM's turns are the client's commits, and it has no events for speech boundaries or commits.
    def speech_started(self, item_id: str, audio_start_ms: int) -> None:
        return None

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> None:
        return None

    def committed(self, item_id: str) -> None:
        return None

    def delta(self, item_id: str, text: str) -> None:
        self.outbox.send(vl.TranscriptionDelta(delta=text))

    def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
        prompt = round(turn.seconds * ENCODER_POSITIONS_PER_SECOND)
        usage = vl.UsageInfo(
            prompt_tokens=prompt,
            completion_tokens=turn.decoded_tokens,
            total_tokens=prompt + turn.decoded_tokens,
        )
        self.outbox.send(vl.TranscriptionDone(text=transcript, usage=usage))

    def transcription_failed(self, item_id: str, error: BaseException) -> None:
        self.error("processing_error", f"Transcription failed: {error}")
