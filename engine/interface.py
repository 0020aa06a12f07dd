"""What front ends (http_api/, realtime/) may use of the engine: a typed interface, no internals.

The in-process engine (engine/core.py) implements it; a remote one could too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from engine.llm.lora_manager import LoRAAdapterInfo
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.request import (
    GenerationOutput,
    GenerationRequest,
    TranscriptionOutput,
    TranscriptionRequest,
)
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest, VoiceInfo
from engine.vision.inputs import VisionInfo


@dataclass(frozen=True)
class ASRModelInfo:
    name: str
    multilingual: bool  # False for .en models: no language choice, no translation


@dataclass(frozen=True)
class EngineHealth:
    """What /health reports. A remote engine (engine/remote/) is degraded while fewer of its replicas run
    than were asked for; the in-process engine is ok or unavailable."""

    status: Literal["ok", "degraded", "unavailable"]
    replicas: int | None = None  # replicas running (None: an in-process engine)
    replicas_wanted: int | None = None


class EngineClient(Protocol):
    device: str
    llm_name: str | None  # None: no LLM served; else the first of served_model_names (reported in replies)
    served_model_names: tuple[str, ...]  # every name a request may give the LLM (--served-model-name)
    # Sampling values (SamplingParams names) a front end uses where a request leaves one unset
    generation_defaults: dict[str, float | int]
    tokenizer: Any  # the LLM's Hugging Face tokenizer (None without an LLM)
    # A vision-language LLM: its family and placeholders, and its Hugging Face processor (which renders
    # chats with media and prepares the media: engine/vision/prompt.py). None for a text-only LLM.
    vision: VisionInfo | None
    processor: Any
    max_model_len: int
    vocab_size: int
    asr_models: dict[str, ASRModelInfo]
    pooling_models: dict[str, PoolingModelInfo]  # embedders, classifiers, cross-encoders (first: default)
    tts_voices: dict[str, VoiceInfo]  # speech synthesis voices (first: default); {} when TTS is off
    lora_adapters: dict[str, LoRAAdapterInfo]  # LoRA adapters served beside the LLM, by name ({}: none)

    @property
    def running(self) -> bool: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        """Stream a generation. Raises InvalidParameter (engine/errors.py) for a request it cannot run,
        EngineStoppedError when not running. Leaving the loop early aborts the request."""
        ...

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        """Stream a transcription. A PREVIEW request may end with `skipped` set instead of a result:
        the ASR scheduler decided it should not run (finals first, or the engine is saturated)."""
        ...

    async def pool(self, request: PoolingRequest) -> PoolingOutput:
        """Embed, classify or score (engine/pooling/request.py), batched with every other pooling
        request. Raises InvalidParameter for a request the model cannot run (too long, wrong task)."""
        ...

    def synthesize(self, request: SpeechRequest) -> AsyncIterator[SpeechOutput]:
        """Speak one piece of text: PCM chunks, the last with `finished` set. Raises InvalidParameter for
        an unknown voice, empty or over-long text, or a speed out of range. Leaving the loop aborts it."""
        ...

    async def load_lora_adapter(self, name: str, path: str) -> LoRAAdapterInfo:
        """Serve the PEFT adapter in directory `path` as `name`. Raises InvalidParameter (a 400) for a name
        taken, a missing or corrupt adapter, a rank over the limit or an adapter for another model."""
        ...

    async def unload_lora_adapter(self, name: str) -> None:
        """Stop serving `name` (new requests get model_not_found; accepted ones finish with it). Raises
        InvalidParameter with code model_not_found when no adapter has that name."""
        ...

    def stats(self) -> EngineStats: ...

    def replica_stats(self) -> dict[str, EngineStats]:
        """Each replica's own stats, by replica id, for /metrics' labelled series ({} in process)."""
        ...

    def health(self) -> EngineHealth: ...
