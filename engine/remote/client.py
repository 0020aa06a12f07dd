"""RemoteEngine: the EngineClient (engine/interface.py) of engine replicas on Ray Serve.

Requests and outputs are the engine's own dataclasses, pickled through DeploymentHandles; streams come
back in lists (engine/remote/replica.py) and are handed on one output at a time. What Serve does: placing
replicas, routing (power of two choices), queueing past max_ongoing_requests and refusing past
max_queued_requests (BackPressureError, here EngineOverloadedError: a 503), autoscaling, replacing
replicas that die. What this adds:

- A request whose replica dies (or refuses it while stopping) before its first output is sent again, to
  another replica. One whose output had begun ends with EngineReplicaLostError: an SSE error event, a
  realtime `.failed` event; the next request goes to a healthy replica.
- A live turn's decodes (TranscriptionRequest.live_stream) are routed with Serve's model multiplexing,
  the turn id as the "model": they stay on the replica that took the turn's first decode, unless it dies
  or stays saturated; the next turn may go to any replica.
- /health and /metrics: a watcher reads the replicas' state and published stats every second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from typing import Any

from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from engine.config import EngineConfig
from engine.errors import EngineOverloadedError, EngineReplicaLostError, EngineStoppedError, InvalidParameter
from engine.interface import ASRModelInfo, EngineHealth
from engine.llm.lora_manager import LoRAAdapterInfo
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.remote import cluster
from engine.remote.cluster import RayOptions
from engine.remote.info import EngineInfo, summed_stats
from engine.request import GenerationOutput, GenerationRequest, TranscriptionOutput, TranscriptionRequest
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest, VoiceInfo
from engine.vision.inputs import VisionInfo

log = logging.getLogger("rtserve.ray")
# The replica is gone (killed, crashed, its node lost) or not reachable: safe to resend before any output.
REPLICA_GONE = (RayActorError, WorkerCrashedError, ReplicaUnavailableError, DeploymentUnavailableError)
MAX_RESENDS = 3
RESEND_DELAY_S = 0.5  # times the attempt: Serve needs a moment to drop a dead replica from its routing
WATCH_PERIOD_S = 1.0
# A handle call reaches one replica, and adapters must be on all of them: they are loaded at start.
RUNTIME_LORA = (
    "LoRA adapters cannot be loaded or unloaded at runtime with --ray: give them with --lora-modules"
)


class _Resend(Exception):
    """Internal: this attempt failed before any output; try another replica."""


class RemoteEngine:
    def __init__(self, config: EngineConfig, options: RayOptions) -> None:
        self.config = config
        self.options = options
        self._handle: DeploymentHandle | None = None
        self._info: EngineInfo | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._accepting = False
        self._started_head = False  # a Ray head this process started (it ends with it)
        self._in_flight = 0
        self._replicas_up = 0
        self._replica_stats: dict[str, EngineStats] = {}

    # ---- lifecycle (server/app.py's ServedEngine) ----

    async def start(self) -> None:
        """Join (or start) the cluster and deploy the replicas, unless they already run this config."""
        loop = asyncio.get_running_loop()
        self._started_head = await loop.run_in_executor(None, cluster.connect, self.options)
        self._handle = await loop.run_in_executor(None, cluster.deploy, self.config, self.options)
        self._info = await self._unary("info")
        await self._watch_once()
        self._watcher = asyncio.create_task(self._watch(), name="rtserve-ray-watch")
        self._accepting = True

    async def drain(self, timeout_s: float) -> bool:
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self._in_flight == 0

    async def stop(self) -> None:
        self._accepting = False
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._handle is not None:
            self._handle = None
            await asyncio.get_running_loop().run_in_executor(None, cluster.disconnect, self._started_head)

    @property
    def running(self) -> bool:
        return self._handle is not None and self._info is not None

    # ---- what front ends read: the replicas' engine, as one of them reported it ----

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineStoppedError("the remote engine has not started")
        return self._info

    @property
    def device(self) -> str:
        return f"{self.info.device} (Ray Serve, {self.options.replicas_wanted}+ replicas)"

    @property
    def llm_name(self) -> str | None:
        return self.info.llm_name

    @property
    def served_model_names(self) -> tuple[str, ...]:
        return self.info.served_model_names

    @property
    def generation_defaults(self) -> dict[str, float | int]:
        return self.info.generation_defaults

    @property
    def tokenizer(self) -> Any:
        return self.info.tokenizer

    @property
    def vision(self) -> VisionInfo | None:
        return self.info.vision

    @property
    def processor(self) -> Any:
        return self.info.processor

    @property
    def max_model_len(self) -> int:
        return self.info.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def asr_models(self) -> dict[str, ASRModelInfo]:
        return self.info.asr_models

    @property
    def pooling_models(self) -> dict[str, PoolingModelInfo]:
        return self.info.pooling_models

    @property
    def tts_voices(self) -> dict[str, VoiceInfo]:
        return self.info.tts_voices

    @property
    def lora_adapters(self) -> dict[str, LoRAAdapterInfo]:
        return self.info.lora_adapters  # --lora-modules: every replica loads them at start

    async def load_lora_adapter(self, name: str, path: str) -> LoRAAdapterInfo:
        raise InvalidParameter("lora_name", RUNTIME_LORA, "unsupported")

    async def unload_lora_adapter(self, name: str) -> None:
        if name not in self.lora_adapters:
            raise InvalidParameter("lora_name", f"The lora adapter '{name}' cannot be found.", "not_found")
        raise InvalidParameter("lora_name", RUNTIME_LORA, "unsupported")

    def stats(self) -> EngineStats:
        return summed_stats(list(self._replica_stats.values()))

    def replica_stats(self) -> dict[str, EngineStats]:
        return dict(self._replica_stats)

    def health(self) -> EngineHealth:
        up, wanted = self._replicas_up, self.options.replicas_wanted
        if not self.running or up == 0:
            status = "unavailable"
        else:
            status = "ok" if up >= wanted else "degraded"
        return EngineHealth(status, replicas=up, replicas_wanted=wanted)

    # ---- requests ----

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        return self._stream("generate", request)

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        return self._stream("transcribe", request, affinity=request.live_stream)

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechOutput]:
        return self._stream("synthesize", request)

    async def pool(self, request: PoolingRequest) -> PoolingOutput:
        self._check_accepting()
        self._in_flight += 1
        try:
            return await self._unary("pool", request)
        finally:
            self._in_flight -= 1

    async def _stream(self, method: str, request: Any, affinity: str | None = None) -> AsyncIterator[Any]:
        self._check_accepting()
        handle = self._require_handle().options(stream=True, method_name=method)
        if affinity is not None:
            handle = handle.options(multiplexed_model_id=affinity)
        self._in_flight += 1
        try:
            for attempt in range(MAX_RESENDS + 1):
                try:
                    async with aclosing(
                        self._attempt(handle, request, attempt == MAX_RESENDS)
                    ) as attempt_outputs:
                        async for outputs in attempt_outputs:
                            for out in outputs:
                                yield out
                    return
                except _Resend:
                    await asyncio.sleep(RESEND_DELAY_S * (attempt + 1))
        finally:
            self._in_flight -= 1

    async def _attempt(self, handle: DeploymentHandle, request: Any, last: bool) -> AsyncIterator[list[Any]]:
        """One try on one replica. Raises _Resend when it failed before any output and may be retried."""
        response = handle.remote(request)
        started = False
        try:
            async for outputs in response:
                started = True
                yield outputs
        except (GeneratorExit, asyncio.CancelledError):
            with suppress(Exception):  # best effort: it may have just ended
                response.cancel()  # our reader left early (client gone): abort it on the replica
            raise
        except BackPressureError as exc:
            raise EngineOverloadedError(f"{exc}; try again later") from None
        except REPLICA_GONE as exc:
            if started or last:
                raise EngineReplicaLostError(
                    f"the engine replica running this request failed: {exc}"
                ) from exc
            log.warning("an engine replica failed before answering; resending: %s", exc)
            raise _Resend() from exc
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            if isinstance(cause, EngineStoppedError) and not started and not last:
                raise _Resend() from cause  # that replica is stopping (scale-down, redeploy)
            raise cause from None

    async def _unary(self, method: str, request: Any = None) -> Any:
        handle = self._require_handle().options(method_name=method)
        for attempt in range(MAX_RESENDS + 1):
            try:
                return await (handle.remote() if request is None else handle.remote(request))
            except BackPressureError as exc:
                raise EngineOverloadedError(f"{exc}; try again later") from None
            except REPLICA_GONE as exc:
                if attempt == MAX_RESENDS:
                    raise EngineReplicaLostError(f"no engine replica answered: {exc}") from exc
            except RayTaskError as exc:
                raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
            await asyncio.sleep(RESEND_DELAY_S * (attempt + 1))
        raise AssertionError("unreachable")

    def _require_handle(self) -> DeploymentHandle:
        if self._handle is None:
            raise EngineStoppedError("the engine is not running")
        return self._handle

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise EngineStoppedError("the server is shutting down" if self.running else "not started")

    # ---- the replicas' state, for /health and /metrics ----

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_PERIOD_S)
            try:
                await self._watch_once()
            except Exception as exc:  # the cluster unreachable for a moment: report what was last seen
                log.warning("could not read the replicas' state: %s", exc)

    async def _watch_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._replicas_up = await loop.run_in_executor(None, cluster.running_replicas, self.options)
        self._replica_stats = await loop.run_in_executor(None, cluster.replica_stats, self.options)
