"""What front ends (http_api/, realtime/) may use of the engine: a typed interface, no internals.

The in-process engine (engine/core.py) implements it; a remote one could too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest
from engine.request import (
    GenerationOutput,
    GenerationRequest,
    TranscriptionOutput,
    TranscriptionRequest,
)
from engine.stats import EngineStats
from engine.tts.request import SpeechOutput, SpeechRequest, VoiceInfo


@dataclass(frozen=True)
class ASRModelInfo:
    name: str
    multilingual: bool  # False for .en models: no language choice, no translation


class EngineClient(Protocol):
    device: str
    llm_name: str | None  # None: no LLM served; else the first of served_model_names (reported in replies)
    served_model_names: tuple[str, ...]  # every name a request may give the LLM (--served-model-name)
    # Sampling values (SamplingParams names) a front end uses where a request leaves one unset
    generation_defaults: dict[str, float | int]
    tokenizer: Any  # the LLM's Hugging Face tokenizer (None without an LLM)
    max_model_len: int
    vocab_size: int
    asr_models: dict[str, ASRModelInfo]
    pooling_models: dict[str, PoolingModelInfo]  # embedders, classifiers, cross-encoders (first: default)
    tts_voices: dict[str, VoiceInfo]  # speech synthesis voices (first: default); {} when TTS is off

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

    def stats(self) -> EngineStats: ...
