"""The speech synthesis lane: pieces of text from every conversation and HTTP request, scheduled by one
scheduler (scheduler.py: live conversations first, bounded work per step), spoken by Piper voices on the
inference thread (runner.py), each answered with its PCM16."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.models.piper_voice import PiperVoiceModel
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest, VoiceInfo
from engine.tts.runner import TTSRunner
from engine.tts.scheduler import SpeechBatch, SpeechResult, SpeechTask, TTSScheduler
from engine.tts.segmenter import split_sentences

MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range
MAX_PIECE_CHARS = 1000  # one request is a sentence or clause; split longer text (segmenter.py)
# Characters spoken in one step (at least one piece). One piece: padded batches do not pay on a CPU
# (scheduler.py), and a step's audio goes out only when the step ends, so a piece per step gets each
# piece's audio out as soon as it is made and lets the other lanes step between pieces.
MAX_STEP_CHARS, BUSY_STEP_CHARS = 1, 1


class TTSLane:
    name = "tts"

    def __init__(
        self, models: dict[str, PiperVoiceModel], scheduler: TTSScheduler, stats: EngineStats
    ) -> None:
        self.scheduler = scheduler
        self.runner = TTSRunner(models)
        self.stats = stats
        self.voices: dict[str, VoiceInfo] = {name: model.info(name) for name, model in models.items()}

    # ---- requests (event loop) ----

    def add(self, request: SpeechRequest, outputs: asyncio.Queue[SpeechOutput | BaseException]) -> SpeechTask:
        voice = request.voice or next(iter(self.voices))
        if voice not in self.voices:
            served = ", ".join(self.voices)
            raise InvalidParameter("voice", f"the voice {voice!r} is not served here; voices: {served}")
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise InvalidParameter("speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
        text = request.text.strip()
        if not split_sentences(text):
            raise InvalidParameter("input", "the input has nothing to speak")
        if len(text) > MAX_PIECE_CHARS:
            raise InvalidParameter(
                "input", f"a piece of text to speak has at most {MAX_PIECE_CHARS} characters"
            )
        task = SpeechTask(text, voice, 1.0 / request.speed, request.priority, outputs, request.request_id)
        self.scheduler.add(task)
        self._count()
        return task

    def abort(self, task: SpeechTask) -> None:
        if not task.done:
            self.scheduler.abort(task)
            self._count()

    def pending(self) -> int:
        return self.scheduler.pending()

    def fail_all(self, error: BaseException) -> None:
        self.scheduler.fail_all(error)

    def idle_release(self) -> Callable[[], object] | None:
        return None  # nothing is kept between steps

    # ---- the step ----

    def schedule(self) -> SpeechBatch | None:
        batch = self.scheduler.schedule()
        self._count()
        return batch

    def run(self, batch: SpeechBatch) -> SpeechResult:
        return self.runner.run(batch)

    def postprocess(self, batch: SpeechBatch, result: SpeechResult) -> None:
        self.scheduler.postprocess(batch, result)
        self._count()

    def fail(self, batch: SpeechBatch, error: BaseException) -> None:
        self.scheduler.fail(batch, error)
        self._count()

    def _count(self) -> None:
        s = self.scheduler
        self.stats.tts_waiting = s.waiting()
        self.stats.tts_pieces_total = s.pieces_total
        self.stats.tts_audio_seconds_total = s.audio_seconds_total
        self.stats.tts_synthesis_seconds_total = s.synthesis_seconds_total


def build_tts_lane(config: EngineConfig, device: str, stats: EngineStats) -> TTSLane | None:
    """Load config.tts's Piper voices (blocking); None when the config serves none. Piper runs on the CPU
    (onnxruntime) whatever `device` the torch lanes use."""
    if not config.tts:
        return None
    models: dict[str, PiperVoiceModel] = {}
    for spec in config.tts:
        model = PiperVoiceModel(spec, threads=config.threads)
        name = model.dataset if model.dataset not in models else model.model_name
        if name in models:
            raise ValueError(f"--tts {spec}: the voice {name!r} is already served")
        models[name] = model
    scheduler = TTSScheduler(
        max_chars=MAX_STEP_CHARS,
        busy_chars=BUSY_STEP_CHARS,
        others_stepping=lambda: bool(stats.asr_running or stats.llm_running),
    )
    return TTSLane(models, scheduler, stats)
