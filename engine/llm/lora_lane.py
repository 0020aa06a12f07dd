"""The LLM lane's LoRA adapters: load (read and checked on the inference thread), serve, unload."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any

from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.llm.lora_manager import LoRAAdapter, LoRAAdapterInfo, LoRAManager
from engine.llm.runner import LLMRunner
from engine.llm.scheduler import LLMScheduler
from engine.llm.sequence import Sequence
from engine.models.lora import LoRAStore

log = logging.getLogger(__name__)


class LoRAAdapters:
    def __init__(self, manager: LoRAManager, store: LoRAStore, base_names: tuple[str, ...]) -> None:
        self.manager = manager
        self.store = store
        self.base_names = base_names
        self.infos: dict[str, LoRAAdapterInfo] = {}

    def _read(self, name: str, path: str) -> tuple[LoRAAdapter, int]:
        """Inference thread (or start-up): read and check the adapter, keep its weights on the CPU."""
        weights = self.store.read(path)
        adapter = LoRAAdapter(name, path, weights.rank)
        self.store.keep(adapter.adapter_id, weights)
        return adapter, weights.nbytes

    def _register(self, adapter: LoRAAdapter, nbytes: int) -> LoRAAdapterInfo:
        self.manager.check_new_name(adapter.name, self.base_names)
        self.manager.register(adapter)
        info = LoRAAdapterInfo(adapter.name, adapter.path, self.base_names[0], adapter.rank, nbytes)
        self.infos[adapter.name] = info
        log.info("LoRA adapter %s (rank %d, %.1f MB) from %s", adapter.name, adapter.rank, nbytes / 2**20,
                 adapter.path)  # fmt: skip
        return info

    def load_now(self, name: str, path: str) -> LoRAAdapterInfo:
        """At start-up, before the inference thread runs."""
        self.manager.check_new_name(name, self.base_names)
        return self._register(*self._read(name, path))

    async def load(self, name: str, path: str, executor: Executor | None) -> LoRAAdapterInfo:
        self.manager.check_new_name(name, self.base_names)
        if not path:
            raise InvalidParameter("lora_path", "lora_path is required")
        adapter, nbytes = await asyncio.get_running_loop().run_in_executor(executor, self._read, name, path)
        return self._register(adapter, nbytes)  # checks the name again: a load may have raced this one

    def unload(self, name: str) -> None:
        if name not in self.manager.served:
            raise InvalidParameter("lora_name", f"The lora adapter '{name}' cannot be found.", "not_found")
        self.manager.unregister(name)
        del self.infos[name]

    def resolve(self, name: str | None) -> int | None:
        return None if name is None else self.manager.resolve(name)

    def attach(self, seq: Sequence, name: str | None) -> None:
        """Give `seq` its adapter (model_not_found for a name not served) and count it as accepted."""
        if name is not None:
            seq.lora_id = self.manager.resolve(name)
            self.manager.accept(seq)


def attach_lora(loras: LoRAAdapters | None, seq: Sequence, name: str | None) -> None:
    if name is not None and loras is None:
        raise InvalidParameter("model", f"The model '{name}' does not exist", code="model_not_found")
    if loras is not None:
        loras.attach(seq, name)


def setup_lora(config: EngineConfig, scheduler: LLMScheduler, runner: LLMRunner, model: Any,
               base_names: tuple[str, ...]) -> LoRAAdapters:  # fmt: skip
    """The lane's adapters, with config.lora_modules loaded (a bad one stops the start with its reason).
    Device slots are allocated only when a step first runs an adapter."""
    manager = LoRAManager(config.max_loras)
    dtype = model.model.embed_tokens.weight.dtype  # the activations' (projections may be quantized)
    names = [*base_names, str(getattr(model.config, "_name_or_path", "") or "")]
    store = LoRAStore(
        model.config, names, config.max_loras, config.max_lora_rank,
        max(config.max_cpu_loras or config.max_loras, 1), runner.device, dtype,
    )  # fmt: skip
    scheduler.loras = manager
    runner.lora = store
    loras = LoRAAdapters(manager, store, base_names)
    for name, path in config.lora_modules.items():
        try:
            loras.load_now(name, path)
        except InvalidParameter as exc:
            raise ValueError(f"LoRA adapter {name!r} ({path}): {exc.message}") from None
    return loras
