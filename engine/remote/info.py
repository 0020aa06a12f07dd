"""What a replica tells the front end about itself, and the replicas' stats summed. Plain data, no Ray."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.interface import ASRModelInfo
from engine.llm.lora_manager import LoRAAdapterInfo
from engine.pooling.request import PoolingModelInfo
from engine.stats import EngineStats
from engine.tts.request import VoiceInfo
from engine.vision.inputs import VisionInfo

# EngineStats fields that are a high-water mark: the replicas' largest, not their sum.
_MAX_FIELDS = frozenset({"llm_max_batch_size", "asr_max_batch_size"})


@dataclass
class EngineInfo:
    """The EngineClient attributes of a replica's engine, sent once when the front end starts. Every
    replica of a deployment loads the same EngineConfig, so any one answers for all of them."""

    device: str
    llm_name: str | None
    served_model_names: tuple[str, ...]
    generation_defaults: dict[str, float | int]
    tokenizer: Any  # the Hugging Face tokenizer, pickled: the front end encodes chats and counts tokens
    vision: VisionInfo | None  # a vision-language LLM's family and placeholders
    processor: Any  # its Hugging Face processor, pickled: the front end prepares media with it
    max_model_len: int
    vocab_size: int
    asr_models: dict[str, ASRModelInfo]
    pooling_models: dict[str, PoolingModelInfo]
    tts_voices: dict[str, VoiceInfo]
    lora_adapters: dict[str, LoRAAdapterInfo]  # those every replica loads at start (--lora-modules)
    fingerprint: str  # of the EngineConfig and deployment options it was deployed with


def summed_stats(replicas: list[EngineStats]) -> EngineStats:
    """One EngineStats for the whole deployment: counts and gauges summed, high-water marks the largest,
    started_at the earliest."""
    total = EngineStats()
    if not replicas:
        return total
    for f in dataclasses.fields(EngineStats):
        if f.name.startswith("_"):
            continue
        values = [getattr(stats, f.name) for stats in replicas]
        if f.name == "started_at":
            total.started_at = min(values)
        elif not all(isinstance(v, int | float) for v in values):
            setattr(total, f.name, values[0])  # not a number: nothing to add up
        elif f.name in _MAX_FIELDS:
            setattr(total, f.name, max(values))
        else:
            setattr(total, f.name, sum(values))
    return total
