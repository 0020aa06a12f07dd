"""The engine's face to the asyncio world: one scheduler loop, one inference thread.

    engine = app[ENGINE_KEY]
    async for out in engine.generate(GenerationRequest(ids, params)):   # GenerationOutput
        ...
    async for out in engine.transcribe(TranscriptionRequest(audio, "whisper-tiny.en")):
        ...                                                              # TranscriptionOutput

Leaving the loop early (break, exception, task cancelled) aborts the request and frees its
slot. Scheduling and bookkeeping stay on the event loop; only model steps run on the thread,
so state flows one way: scheduler -> runner -> scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import torch

from engine.asr_scheduler import ASRScheduler, WhisperGroup, make_task
from engine.config import EngineConfig
from engine.detokenizer import IncrementalDetokenizer
from engine.kv_cache import BlockManager, KVCache
from engine.llm_runner import LLMRunner
from engine.llm_scheduler import LLMScheduler
from engine.models.llm_loader import load_llm
from engine.models.paged_llama import PagedLlama
from engine.models.quantize import quantize_llm_int8, quantize_whisper_int8
from engine.request import (
    GenerationOutput,
    GenerationRequest,
    TranscriptionOutput,
    TranscriptionRequest,
)
from engine.sequence import Sequence
from engine.stats import EngineStats
from engine.step import StepPlan, StepResult
from engine.whisper_runner import WhisperJob, WhisperRunner

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ASRModelInfo:
    name: str
    multilingual: bool  # False for .en models: no language choice, no translation


class EngineStoppedError(RuntimeError):
    pass


async def _drain(outputs: asyncio.Queue[T | BaseException]) -> AsyncIterator[T]:
    """A request's outputs as the scheduler queues them; a queued exception is raised here."""
    while True:
        out = await outputs.get()
        if isinstance(out, BaseException):
            raise out
        yield out


class AsyncEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.stats_ = EngineStats()
        self.llm_name: str | None = None
        self.tokenizer: object | None = None
        self.max_model_len = config.max_model_len
        self.vocab_size = 0
        self.asr_models: dict[str, ASRModelInfo] = {}
        self._llm_runner: LLMRunner | None = None
        self._llm_scheduler: LLMScheduler | None = None
        self._whisper: dict[str, WhisperRunner] = {}
        on_cpu = self.device == "cpu"
        max_encode = config.max_asr_encode or (1 if on_cpu else config.max_asr_batch)
        self._asr_scheduler = ASRScheduler(
            config.max_asr_batch, self.stats_, max_encode, realtime_runs_alone=on_cpu
        )
        self._executor: ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._token_times: deque[tuple[float, int]] = deque()

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, config: EngineConfig) -> AsyncEngine:
        """Load every model (blocking; seconds with a warm cache)."""
        if config.threads:
            torch.set_num_threads(config.threads)
        engine = cls(config)
        if config.llm:
            engine._load_llm(config.llm)
        if config.asr:
            from engine.models.whisper_loader import load_whisper
        for spec in config.asr:
            bundle = load_whisper(spec, config.cache_dir, engine.device)
            if config.asr_quantize == "int8":
                if engine.device != "cpu":
                    raise ValueError("--asr-quantize int8 is a CPU option")
                quantize_whisper_int8(bundle.model)  # before the runner reads its weights
            engine._whisper[bundle.name] = WhisperRunner(bundle, engine.device)
            engine.asr_models[bundle.name] = ASRModelInfo(bundle.name, bundle.multilingual)
        return engine

    def _load_llm(self, spec: str) -> None:
        cfg = self.config
        bundle = load_llm(spec, cfg.cache_dir, self.device)
        model = bundle.model
        if cfg.quantize == "int8":
            if self.device != "cpu":
                raise ValueError("--quantize int8 is a CPU option")
            model = quantize_llm_int8(model)
        self.max_model_len = min(cfg.max_model_len, model.config.max_position_embeddings)
        paged = PagedLlama(model, self.max_model_len)
        num_blocks = max(
            cfg.kv_cache_tokens // cfg.kv_block_size, -(-self.max_model_len // cfg.kv_block_size)
        )
        dtype = next(model.model.embed_tokens.parameters()).dtype
        cache = KVCache.allocate(
            paged.num_layers,
            num_blocks,
            cfg.kv_block_size,
            paged.num_kv_heads,
            paged.head_dim,
            dtype,
            self.device,
        )
        blocks = BlockManager(num_blocks, cfg.kv_block_size)
        self._llm_runner = LLMRunner(paged, cache, blocks, self.device)
        self._llm_scheduler = LLMScheduler(
            blocks,
            cfg.max_num_seqs,
            cfg.max_prefill_tokens,
            self.max_model_len,
            bundle.eos_token_ids,
            self.stats_,
        )
        self.stats_.kv_blocks_total = num_blocks
        self.llm_name = bundle.name
        self.tokenizer = bundle.tokenizer
        self.vocab_size = paged.vocab_size

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        threads = self.config.threads

        def init_thread() -> None:
            if threads:
                torch.set_num_threads(threads)

        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="rtserve-inference", initializer=init_thread
        )
        self._wake = asyncio.Event()
        self._loop_task = asyncio.create_task(self._run_loop(), name="rtserve-scheduler")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        stopped = EngineStoppedError("the server is shutting down")
        if self._llm_scheduler is not None:
            for seq in list(self._llm_scheduler.running) + [
                s for q in self._llm_scheduler.waiting.values() for s in q
            ]:
                seq.outputs.put_nowait(stopped)
        self._asr_scheduler.fail_all(stopped)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    # ---- the loop ------------------------------------------------------------------------
    async def _run_loop(self) -> None:
        while True:
            try:
                stepped = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in bookkeeping must not kill the server; log it loudly
                log.exception("engine step failed")
                await asyncio.sleep(0.05)  # yield to the event loop so sockets and signals are served
                stepped = True
            if not stepped:
                self._wake.clear()
                await self._wake.wait()

    async def step(self) -> bool:
        plan = self._schedule()
        if plan.empty:
            return False
        assert self._executor is not None
        result = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, plan)
        self._postprocess(plan, result)
        return True

    def _schedule(self) -> StepPlan:
        llm = self._llm_scheduler.schedule() if self._llm_scheduler is not None else None
        return StepPlan(llm=llm, asr=self._asr_scheduler.schedule())

    def _run(self, plan: StepPlan) -> StepResult:
        """On the inference thread. Each part fails alone: a bad batch never takes the others down."""
        result = StepResult()
        with torch.inference_mode():
            for group, index in plan.asr.cancels:
                if group.handle is not None:
                    self._whisper[group.model].cancel(group.handle, index)
            by_model: dict[str, list[WhisperGroup]] = {}
            for group in plan.asr.new_groups + plan.asr.running_groups:
                by_model.setdefault(group.model, []).append(group)
            for model, groups in by_model.items():
                self._run_whisper(self._whisper[model], groups, result)
            if plan.llm is not None:
                assert self._llm_runner is not None
                try:
                    result.llm_tokens = self._llm_runner.run(plan.llm)
                except Exception as exc:
                    log.exception("LLM batch failed")
                    result.llm_error = exc
        return result

    def _run_whisper(self, runner: WhisperRunner, groups: list[WhisperGroup], result: StepResult) -> None:
        """Start new groups, merge every group of this model into one batch, and advance it a token."""
        started: list[WhisperGroup] = []
        for group in groups:
            try:
                if group.handle is None:
                    group.handle = runner.start([w.job for w in group.windows])
                started.append(group)
            except Exception as exc:
                log.exception("whisper batch failed to start")
                result.asr_errors.append((group, exc))
        if not started:
            return
        try:
            target = started[0]
            if len(started) > 1:
                handle, kept = runner.merge([g.handle for g in started])
                target = WhisperGroup.merged(started, kept, handle)
                result.asr_merges.append((started, target))
        except Exception as exc:
            log.exception("merging whisper batches failed")
            result.asr_errors.extend((g, exc) for g in started)
            return
        if not target.windows:
            return  # every row was cancelled: nothing left to advance
        try:
            result.asr_rows.append((target, runner.step(target.handle)))
        except Exception as exc:
            log.exception("whisper batch failed")
            result.asr_errors.append((target, exc))

    def _postprocess(self, plan: StepPlan, result: StepResult) -> None:
        self.stats_.steps_total += 1
        for groups, merged in result.asr_merges:
            self._asr_scheduler.replace(groups, merged)
        for group, rows in result.asr_rows:
            self._asr_scheduler.postprocess(group, rows)
        for group, exc in result.asr_errors:
            self._asr_scheduler.fail_group(group, exc)
        if plan.llm is not None and self._llm_scheduler is not None:
            if result.llm_tokens is not None:
                made = self._llm_scheduler.postprocess(plan.llm, result.llm_tokens)
                self._count_tokens(made if not plan.llm.is_prefill else 0)
            else:
                for seq in plan.llm.seqs:
                    seq.aborted = True
                    seq.outputs.put_nowait(result.llm_error or RuntimeError("LLM step failed"))

    def _count_tokens(self, n: int) -> None:
        now = time.monotonic()
        self.stats_.generation_tokens_total += n
        self._token_times.append((now, n))
        while self._token_times and now - self._token_times[0][0] > 5.0:
            self._token_times.popleft()

    # ---- requests ------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        if self._llm_scheduler is None or self.tokenizer is None:
            raise ValueError("this server runs no LLM")
        if not self.running:
            raise EngineStoppedError("the engine is not running")
        params = request.params
        params.validate(self.vocab_size)
        if not request.prompt_token_ids:
            raise ValueError("the prompt is empty")
        if any(not 0 <= t < self.vocab_size for t in request.prompt_token_ids):
            raise ValueError("the prompt has token ids outside the vocabulary")
        if len(request.prompt_token_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has "
                f"{len(request.prompt_token_ids)} and max_tokens asks for {params.max_tokens} more"
            )
        outputs: asyncio.Queue[GenerationOutput | BaseException] = asyncio.Queue()
        seq = Sequence(list(request.prompt_token_ids), params, request.priority, outputs)
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        seq.detokenizer = IncrementalDetokenizer(
            self.tokenizer, list(params.stop), params.skip_special_tokens, params.include_stop_str_in_output
        )
        self._llm_scheduler.add(seq)
        self._wake.set()
        try:
            async for out in _drain(outputs):
                yield out
                if out.finish_reason is not None:
                    return
        finally:
            if seq.finish_reason is None:
                seq.aborted = True
                self._wake.set()

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        if request.model not in self._whisper:
            raise ValueError(f"the model {request.model!r} is not served")
        if not self.running:
            raise EngineStoppedError("the engine is not running")
        # Checked here, so one bad request is refused alone instead of failing its whole batch.
        self._whisper[request.model].validate_job(
            WhisperJob(audio=request.audio[:0], language=request.language, task=request.task,
                       temperature=request.temperature, encoder_context=request.encoder_context,
                       min_context_s=request.min_context_s, draft_tokens=request.draft_tokens)
        )  # fmt: skip
        outputs: asyncio.Queue[TranscriptionOutput | BaseException] = asyncio.Queue()
        task = make_task(request, outputs)
        self._asr_scheduler.add(task)
        self._wake.set()
        try:
            async for out in _drain(outputs):
                yield out
                if out.result is not None:
                    return
        finally:
            if not task.done:
                task.aborted = True
                self._wake.set()

    def stats(self) -> EngineStats:
        now = time.monotonic()
        window = [(t, n) for t, n in self._token_times if now - t <= 5.0]
        self.stats_.generation_tokens_per_s = sum(n for _, n in window) / 5.0 if window else 0.0
        return self.stats_
