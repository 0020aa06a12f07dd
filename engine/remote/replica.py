"""One engine replica: the Ray Serve deployment class that runs an in-process Engine (engine/core.py).

Streaming methods yield lists: every output the engine has ready when the previous list left, so a step
that produces several tokens (or several sequences' tokens) costs one Ray item, not one each. Errors the
engine raises (InvalidParameter, EngineStoppedError) reach the caller as the cause of Ray's task error.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import torch
from ray import serve
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

from engine.config import EngineConfig
from engine.core import Engine
from engine.pooling.request import PoolingOutput, PoolingRequest
from engine.remote.info import EngineInfo
from engine.request import GenerationOutput, GenerationRequest, TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest

log = logging.getLogger("rtserve.replica")
T = TypeVar("T")
STATS_PERIOD_S = 1.0  # how often a replica publishes its stats for the front ends' /metrics
DRAIN_S = 10.0  # on a graceful stop: how long accepted work gets to finish
LIVE_TURNS_PER_REPLICA = 256  # turn ids a replica keeps routing to itself (least recently used dropped)


def stats_key_prefix(app_name: str) -> bytes:
    return f"rtserve/{app_name}/stats/".encode()


class _End:
    """The pump's last item: the stream finished (error None) or raised."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


async def batched(stream: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    """The stream's items, grouped: each list holds everything that arrived while the last was sent.
    Closing this generator cancels the pump, which closes (aborts) the engine's stream."""
    queue: asyncio.Queue[T | _End] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
            queue.put_nowait(_End(None))
        except Exception as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(_End(exc))

    task = asyncio.create_task(pump())
    try:
        while True:
            ready = [await queue.get()]
            while not queue.empty():
                ready.append(queue.get_nowait())
            items = [item for item in ready if not isinstance(item, _End)]
            if items:
                yield items
            if isinstance(end := ready[-1], _End):
                if end.error is not None:
                    raise end.error
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class EngineReplica:
    """Deployed by engine/remote/cluster.py with serve.deployment(...) options (resources, replicas,
    max_ongoing_requests); every replica loads the same EngineConfig."""

    async def __init__(self, config: EngineConfig, app_name: str, fingerprint: str) -> None:
        self._publisher: asyncio.Task[None] | None = None  # set once the engine runs
        self.fingerprint = fingerprint
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._stats_key = stats_key_prefix(app_name) + self.replica_id.encode()
        self.engine = await asyncio.to_thread(Engine.load, config)  # seconds: off the replica's loop
        await self.engine.start()
        self._publisher = asyncio.create_task(self._publish_stats())
        threads = torch.get_num_threads()
        log.info("engine replica %s running on %s, %d threads", self.replica_id, self.engine.device, threads)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[list[GenerationOutput]]:
        async for outputs in batched(self.engine.generate(request)):
            yield outputs

    async def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[list[TranscriptionOutput]]:
        if turn := serve.get_multiplexed_model_id():
            await self._live_turn(turn)  # tells the routers this replica has the turn
        async for outputs in batched(self.engine.transcribe(request)):
            yield outputs

    async def synthesize(self, request: SpeechRequest) -> AsyncIterator[list[SpeechOutput]]:
        async for outputs in batched(self.engine.synthesize(request)):
            yield outputs

    @serve.multiplexed(max_num_models_per_replica=LIVE_TURNS_PER_REPLICA)
    async def _live_turn(self, turn: str) -> str:
        """Serve's model multiplexing, with a live turn's id as the model: a turn's later decodes are
        routed to the replica that has it. Nothing is loaded; the least recently used turns are forgotten."""
        return turn

    async def pool(self, request: PoolingRequest) -> PoolingOutput:
        return await self.engine.pool(request)

    async def stats(self) -> tuple[str, EngineStats]:
        return self.replica_id, self.engine.stats()

    async def info(self) -> EngineInfo:
        engine = self.engine
        return EngineInfo(
            device=engine.device,
            llm_name=engine.llm_name,
            served_model_names=engine.served_model_names,
            generation_defaults=engine.generation_defaults,
            tokenizer=engine.tokenizer,
            vision=engine.vision,
            processor=engine.processor,
            max_model_len=engine.max_model_len,
            vocab_size=engine.vocab_size,
            asr_models=engine.asr_models,
            pooling_models=engine.pooling_models,
            tts_voices=engine.tts_voices,
            lora_adapters=engine.lora_adapters,
            fingerprint=self.fingerprint,
        )

    async def check_health(self) -> None:
        """Serve's periodic probe: a replica whose engine loop has died is replaced."""
        if not self.engine.running:
            raise RuntimeError("the engine loop is not running")

    async def _publish_stats(self) -> None:
        """Into Ray's key-value store (GCS), where front ends read every replica's stats (a handle call
        would reach only one replica, picked by the router)."""
        while True:
            blob = pickle.dumps((time.time(), self.engine.stats()))
            try:
                await asyncio.to_thread(_internal_kv_put, self._stats_key, blob, True)
            except Exception as exc:  # the GCS restarting: try again next period
                log.warning("could not publish stats: %s", exc)
            await asyncio.sleep(STATS_PERIOD_S)

    async def __del__(self) -> None:
        """Serve's graceful stop (scale-down, redeploy, shutdown): finish accepted work, then stop."""
        if self._publisher is None:
            return  # the constructor failed: no engine runs
        self._publisher.cancel()
        await self.engine.drain(DRAIN_S)
        await self.engine.stop()
        await asyncio.to_thread(_internal_kv_del, self._stats_key)
