"""The speech synthesis runner: a step's pieces -> the Piper model, one piece at a time -> PCM16 each.

It only reads the batch it is given (scheduler.SpeechBatch) and returns plain bytes."""

from __future__ import annotations

import time

from engine.models.piper_voice import PiperVoiceModel
from engine.tts.scheduler import SpeechBatch, SpeechResult, SpokenPiece
from engine.tts.segmenter import speakable_text


class TTSRunner:
    def __init__(self, voices: dict[str, PiperVoiceModel]) -> None:
        self.voices = voices

    def run(self, batch: SpeechBatch) -> SpeechResult:
        started = time.perf_counter()
        pieces: list[SpokenPiece] = []
        for job in batch.jobs:
            model = self.voices[job.voice]
            pieces.append(
                SpokenPiece(model.speak(speakable_text(job.text), job.length_scale), model.sample_rate)
            )
        return SpeechResult(tuple(pieces), time.perf_counter() - started)
