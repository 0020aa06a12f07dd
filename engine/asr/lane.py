"""The ASR lane: Whisper transcription. Requests are checked once here (validation.py), split into windows
and scheduled (scheduler.py, pure Python), run on the inference thread (runner.py), and streamed back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from engine.asr.model_runner import WhisperRunner
from engine.asr.plan import ASRPlan, ASRResult
from engine.asr.runner import ASRRunner
from engine.asr.scheduler import ASRScheduler
from engine.asr.task import TranscriptionTask, make_task
from engine.asr.validation import ASRModelLimits, validate_request
from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.interface import ASRModelInfo
from engine.request import TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats


class ASRLane:
    name = "asr"

    def __init__(self, runners: dict[str, WhisperRunner], scheduler: ASRScheduler) -> None:
        self.scheduler = scheduler
        self.runner = ASRRunner(runners)
        self.limits = {name: ASRModelLimits.of(runner.bundle) for name, runner in runners.items()}
        self.models = {name: ASRModelInfo(name, lim.multilingual) for name, lim in self.limits.items()}

    # ---- requests (event loop) ----

    def add(
        self, request: TranscriptionRequest, outputs: asyncio.Queue[TranscriptionOutput | BaseException]
    ) -> TranscriptionTask:
        limits = self.limits.get(request.model)
        if limits is None:
            raise InvalidParameter("model", f"the model {request.model!r} is not served", "model_not_found")
        validate_request(request, limits)
        task = make_task(request, outputs)
        self.scheduler.add(task)
        return task

    def abort(self, task: TranscriptionTask) -> None:
        self.scheduler.abort(task)

    def pending(self) -> int:
        return self.scheduler.pending()

    def fail_all(self, error: BaseException) -> None:
        self.scheduler.fail_all(error)

    def idle_release(self) -> Callable[[], object] | None:
        """Batches the runner still holds that no longer decode (their rows were all cancelled, or their
        step failed) are freed; they would be at the next step anyway."""
        live = self.scheduler.live_batches()
        if all(batch_id in live for batch_id in list(self.runner.batches)):
            return None
        return partial(self.runner.forget_except, live)

    # ---- the step ----

    def schedule(self) -> ASRPlan | None:
        return self.scheduler.schedule()

    def run(self, plan: ASRPlan) -> ASRResult:
        return self.runner.run(plan)

    def postprocess(self, plan: ASRPlan, result: ASRResult) -> None:
        self.scheduler.postprocess(result)

    def fail(self, plan: ASRPlan, error: BaseException) -> None:
        self.scheduler.fail(plan, error)


def build_asr_lane(config: EngineConfig, device: str, stats: EngineStats) -> ASRLane | None:
    """Load config.asr's Whisper models (blocking); None when the config serves none."""
    if not config.asr:
        return None
    from engine.models.quantize import quantize_whisper_int8
    from engine.models.whisper_loader import load_whisper

    if config.asr_quantize == "int8" and device != "cpu":
        raise ValueError("--asr-quantize int8 is a CPU option")
    runners: dict[str, WhisperRunner] = {}
    for spec in config.asr:
        bundle = load_whisper(spec, config.cache_dir, device)
        if config.asr_quantize == "int8":
            quantize_whisper_int8(bundle.model)  # before the runner reads its weights
        runners[bundle.name] = WhisperRunner(bundle, device)
    on_cpu = device == "cpu"
    scheduler = ASRScheduler(
        config.max_asr_batch,
        stats,
        max_encode=config.max_asr_encode or (1 if on_cpu else config.max_asr_batch),
        realtime_runs_alone=on_cpu,
        preview_max_windows=config.preview_max_windows,
        preview_order=config.preview_order,
    )
    return ASRLane(runners, scheduler)
