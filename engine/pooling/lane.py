"""The pooling lane: embeddings, classification and scores. Requests are checked and tokenized once here
(prepare.py), their inputs batched by length across every request (scheduler.py, pure Python), run one
forward per step on the inference thread (runner.py), and answered whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.models.pooling import PoolingBundle
from engine.pooling.prepare import PoolingJob, prepare
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.pooling.runner import PoolingRunner
from engine.pooling.scheduler import PoolingBatch, PoolingResult, PoolingScheduler
from engine.pooling.task import PoolingTask
from engine.stats import EngineStats

# Padded tokens (rows x longest row) in one forward: the whole budget when the pooling lane runs alone, a
# small one while a live session or a token stream steps too (then a step with a pooling forward is late
# by one short forward, and scheduler.LIVE_SHARE spaces those steps out). Measured on a 2-core CPU with
# all-MiniLM-L6-v2: 2048 tokens ~0.4 s (as efficient per token as any bigger batch), 256 tokens ~0.06 s.
CPU_TOKENS, CPU_BUSY_TOKENS = 2048, 256
GPU_TOKENS, GPU_BUSY_TOKENS = 32768, 4096
MAX_ROWS = 256


class PoolingLane:
    name = "pooling"

    def __init__(self, bundles: dict[str, PoolingBundle], scheduler: PoolingScheduler, device: str) -> None:
        self.bundles = bundles
        self.scheduler = scheduler
        self.runner = PoolingRunner(bundles, device)
        self.models: dict[str, PoolingModelInfo] = {name: b.info for name, b in bundles.items()}
        self.default_model = next(iter(bundles))
        # One thread: a tokenizer is not safe to share between threads (its truncation is set per call).
        self._tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="rtserve-pooling-tokenizer")

    # ---- requests (event loop) ----

    async def prepare(self, request: PoolingRequest) -> PoolingJob:
        """Check and tokenize the request on the lane's tokenizer thread: a request of 2048 long texts
        holds neither the event loop nor the inference thread. Raises InvalidParameter."""
        name = request.model or self.default_model
        bundle = self.bundles.get(name)
        if bundle is None:
            raise InvalidParameter("model", f"the model {name!r} is not served", "model_not_found")
        job = partial(prepare, request, bundle.info, bundle.tokenizer, bundle.vocab_size)
        prepared = await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, job)
        return PoolingJob(request, bundle.info, prepared)

    def add(self, job: PoolingJob, outputs: asyncio.Queue[PoolingOutput | BaseException]) -> PoolingTask:
        task = PoolingTask(job.request, job.model, job.prepared, outputs)
        self.scheduler.add(task)
        return task

    def abort(self, task: PoolingTask) -> None:
        if not task.done:
            self.scheduler.abort(task)

    def pending(self) -> int:
        return self.scheduler.pending()

    def fail_all(self, error: BaseException) -> None:
        self.scheduler.fail_all(error)

    def idle_release(self) -> Callable[[], object] | None:
        return None  # nothing is kept between steps

    # ---- the step ----

    def schedule(self) -> PoolingBatch | None:
        return self.scheduler.schedule()

    def run(self, batch: PoolingBatch) -> PoolingResult:
        return self.runner.run(batch)

    def postprocess(self, batch: PoolingBatch, result: PoolingResult) -> None:
        self.scheduler.postprocess(batch, result)

    def fail(self, batch: PoolingBatch, error: BaseException) -> None:
        self.scheduler.fail(batch, error)


def others_stepping(stats: EngineStats) -> Callable[[], bool]:
    """Whether another lane planned work for this step: Whisper windows or LLM sequences in flight (each
    is stepped whenever there is one). The pooling lane is scheduled last, so the others have already
    planned the step and updated these counters."""
    return lambda: bool(stats.asr_running or stats.llm_running)


def build_pooling_lane(config: EngineConfig, device: str, stats: EngineStats) -> PoolingLane | None:
    """Load config.embed's pooling models (blocking); None when the config serves none."""
    if not config.embed:
        return None
    from engine.models.pooling_loader import load_pooling_model

    bundles: dict[str, PoolingBundle] = {}
    for spec in config.embed:
        bundle = load_pooling_model(spec, config.cache_dir, device, config.max_model_len)
        bundles[bundle.info.name] = bundle
    on_cpu = device == "cpu"
    scheduler = PoolingScheduler(
        max_tokens=CPU_TOKENS if on_cpu else GPU_TOKENS,
        busy_tokens=CPU_BUSY_TOKENS if on_cpu else GPU_BUSY_TOKENS,
        max_rows=MAX_ROWS,
        others_stepping=others_stepping(stats),
    )
    return PoolingLane(bundles, scheduler, device)
