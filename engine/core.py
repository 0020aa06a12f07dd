"""The engine: one scheduler loop on the event loop, one inference thread, a lane per kind of work.

    engine = Engine.load(EngineConfig())          # blocking: loads every lane's models
    await engine.start()
    async for out in engine.generate(GenerationRequest(ids, params)):   # GenerationOutput
        ...
    async for out in engine.transcribe(TranscriptionRequest(audio, "whisper-tiny.en")):
        ...                                                              # TranscriptionOutput
    out = await engine.pool(PoolingRequest("embed", ["a text"]))    # PoolingOutput: vectors, scores

Leaving a loop early (break, exception, task cancelled) aborts the request and frees its slot.
Scheduling and bookkeeping stay on the event loop; only the lanes' runners run on the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import torch

from engine.config import EngineConfig
from engine.errors import EngineStoppedError, InvalidParameter
from engine.interface import ASRModelInfo, EngineHealth
from engine.lane import Lane
from engine.lanes import LANE_BUILDERS
from engine.llm.lora_manager import LoRAAdapterInfo
from engine.memory import trim_heap
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.request import GenerationOutput, GenerationRequest, TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest, VoiceInfo
from engine.vision.inputs import VisionInfo

if TYPE_CHECKING:
    from engine.asr.lane import ASRLane
    from engine.llm.lane import LLMLane
    from engine.pooling.lane import PoolingLane
    from engine.tts.lane import TTSLane

log = logging.getLogger(__name__)
Planned = list[tuple[Lane, Any]]
# After this long with nothing to run, the lanes give back memory a burst of work left behind.
IDLE_RELEASE_S = 2.0


class Engine:
    def __init__(self, config: EngineConfig, device: str, stats: EngineStats, lanes: list[Lane]) -> None:
        self.config = config
        self.device = device
        self._stats = stats
        self.lanes = lanes
        by_name = {lane.name: lane for lane in lanes}
        self._llm = cast("LLMLane | None", by_name.get("llm"))
        self._asr = cast("ASRLane | None", by_name.get("asr"))
        self._pooling = cast("PoolingLane | None", by_name.get("pooling"))
        self._tts = cast("TTSLane | None", by_name.get("tts"))
        self._executor: ThreadPoolExecutor | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._accepting = True
        # Set when a request arrives, or when a step plans other lanes' work too: the LLM's multi-step
        # decode (engine/llm/runner.py) then returns after its current inner step instead of all of them.
        self._arrivals = threading.Event()
        if self._llm is not None:
            self._llm.interrupt = self._arrivals

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Load every lane's models (blocking; seconds with a warm cache)."""
        if config.threads:
            torch.set_num_threads(config.threads)
        device = config.resolved_device()
        stats = EngineStats()
        lanes = [lane for build in LANE_BUILDERS if (lane := build(config, device, stats)) is not None]
        return cls(config, device, stats, lanes)

    # ---- what front ends read (engine/interface.py) ----

    @property
    def llm_name(self) -> str | None:
        return self.served_model_names[0] if self._llm else None

    @property
    def served_model_names(self) -> tuple[str, ...]:
        if self._llm is None:
            return ()
        return tuple(self.config.served_model_names) or (self._llm.model_name,)

    @property
    def generation_defaults(self) -> dict[str, float | int]:
        return dict(self._llm.generation_defaults) if self._llm else {}

    @property
    def tokenizer(self) -> Any:
        return self._llm.tokenizer if self._llm else None

    @property
    def vision(self) -> VisionInfo | None:
        return self._llm.vision if self._llm else None

    @property
    def processor(self) -> Any:
        return self._llm.processor if self._llm else None

    @property
    def max_model_len(self) -> int:
        return self._llm.max_model_len if self._llm else self.config.max_model_len

    @property
    def vocab_size(self) -> int:
        return self._llm.vocab_size if self._llm else 0

    @property
    def lora_adapters(self) -> dict[str, LoRAAdapterInfo]:
        return dict(self._llm.loras.infos) if self._llm and self._llm.loras else {}

    async def load_lora_adapter(self, name: str, path: str) -> LoRAAdapterInfo:
        if self._llm is None or self._llm.loras is None:
            raise InvalidParameter("model", "this server runs no LLM")
        return await self._llm.loras.load(name, path, self._executor)  # read on the inference thread

    async def unload_lora_adapter(self, name: str) -> None:
        if self._llm is None or self._llm.loras is None:
            raise InvalidParameter("lora_name", f"The lora adapter '{name}' cannot be found.", "not_found")
        self._llm.loras.unload(name)  # its accepted requests finish first

    @property
    def asr_models(self) -> dict[str, ASRModelInfo]:
        return self._asr.models if self._asr else {}

    @property
    def pooling_models(self) -> dict[str, PoolingModelInfo]:
        return self._pooling.models if self._pooling else {}

    @property
    def tts_voices(self) -> dict[str, VoiceInfo]:
        return self._tts.voices if self._tts else {}

    def stats(self) -> EngineStats:
        self._stats.refresh_rate()
        return self._stats

    def replica_stats(self) -> dict[str, EngineStats]:
        return {}  # one engine, no replicas

    def health(self) -> EngineHealth:
        return EngineHealth("ok" if self.running else "unavailable")

    # ---- lifecycle ----

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

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown, first half: refuse new requests, let accepted ones finish within timeout_s.
        True when none is left; stop() ends whatever still runs."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending() and self.running and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.pending() == 0

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        stopped = EngineStoppedError("the server is shutting down")
        for lane in self.lanes:
            lane.fail_all(stopped)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def pending(self) -> int:
        """Requests accepted by any lane and not finished yet."""
        return sum(lane.pending() for lane in self.lanes)

    # ---- the loop ----

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
                if not await self._woken_within(IDLE_RELEASE_S):
                    await self._release_idle_memory()
                    await self._wake.wait()

    async def _woken_within(self, seconds: float) -> bool:
        # Not asyncio.wait_for: on Python < 3.12 it can swallow a cancel that lands as the wait ends.
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
        return bool(done)

    async def _release_idle_memory(self) -> None:
        work = [release for lane in self.lanes if (release := lane.idle_release()) is not None]

        def release() -> None:
            for job in work:
                job()
            trim_heap()

        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, release)

    async def step(self) -> bool:
        """Ask every lane for its share of the step, run them on the inference thread, hand results back."""
        self._arrivals.clear()
        planned = [(lane, plan) for lane in self.lanes if (plan := lane.schedule()) is not None]
        if not planned:
            return False
        if len(planned) > 1:
            self._arrivals.set()  # other lanes step too: the LLM runs one decode step, as they do
        assert self._executor is not None
        results = await asyncio.get_running_loop().run_in_executor(self._executor, _run_lanes, planned)
        self._postprocess(planned, results)
        return True

    def _postprocess(self, planned: Planned, results: list[Any]) -> None:
        self._stats.steps_total += 1
        for (lane, plan), result in zip(planned, results, strict=True):
            if isinstance(result, _Failed):
                lane.fail(plan, result.error)
            else:
                lane.postprocess(plan, result)

    # ---- requests ----

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        return self._stream(self._llm, "this server runs no LLM", request)

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        return self._stream(self._asr, "this server runs no speech recognition model", request)

    async def pool(self, request: PoolingRequest) -> PoolingOutput:
        missing = "this server runs no embedding or pooling model"
        if self._pooling is None:
            raise InvalidParameter("model", missing)
        job = await self._pooling.prepare(request)  # checked and tokenized off the event loop
        stream = self._stream(self._pooling, missing, job)
        try:
            async for out in stream:
                return out
        finally:
            await stream.aclose()
        raise EngineStoppedError("the pooling request ended without a result")

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechOutput]:
        return self._stream(self._tts, "this server runs no speech synthesis model", request)

    async def _stream(self, lane: Lane | None, missing: str, request: Any) -> AsyncIterator[Any]:
        if lane is None:
            raise InvalidParameter("model", missing)
        if not self.running:
            raise EngineStoppedError("the engine is not running")
        if not self._accepting:
            raise EngineStoppedError("the server is shutting down")
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        ticket = lane.add(request, outputs)
        self._arrivals.set()
        self._wake.set()
        try:
            while True:
                out = await outputs.get()
                if isinstance(out, BaseException):
                    raise out
                yield out
                if out.finished:
                    return
        finally:
            lane.abort(ticket)  # a no-op for a finished request
            self._wake.set()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _run_lanes(planned: Planned) -> list[Any]:
    """On the inference thread. Each lane fails alone: a bad batch never takes the others down."""
    results: list[Any] = []
    with torch.inference_mode():
        for lane, plan in planned:
            try:
                results.append(lane.run(plan))
            except Exception as exc:
                log.exception("%s step failed", lane.name)
                results.append(_Failed(exc))
    return results
