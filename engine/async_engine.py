"""The engine's face to the asyncio world. CONTRACT: the implementation is being written now.

Usage from a handler:
    engine = app[ENGINE_KEY]
    async for out in engine.generate(GenerationRequest(ids, params)):   # GenerationOutput
        ...
    async for out in engine.transcribe(TranscriptionRequest(audio, "whisper-tiny.en")):
        ...                                                              # TranscriptionOutput
Leaving the loop early (break, exception, task cancelled) aborts the request and frees its slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.request import (
    GenerationOutput,
    GenerationRequest,
    TranscriptionOutput,
    TranscriptionRequest,
)
from engine.stats import EngineStats


@dataclass
class ASRModelInfo:
    name: str
    multilingual: bool  # False for .en models: no language choice, no translation


class AsyncEngine:
    config: EngineConfig
    device: str
    llm_name: str | None  # served LLM name, e.g. "smollm2-135m-instruct"
    tokenizer: object | None  # the LLM's transformers tokenizer (has apply_chat_template)
    max_model_len: int
    asr_models: dict[str, ASRModelInfo]

    @classmethod
    def load(cls, config: EngineConfig) -> AsyncEngine:
        """Load every model (blocking; seconds with a warm cache)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start the scheduler loop and the inference thread."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Abort everything in flight and stop the loop."""
        raise NotImplementedError

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        raise NotImplementedError

    def transcribe(self, request: TranscriptionRequest) -> AsyncIterator[TranscriptionOutput]:
        raise NotImplementedError

    def stats(self) -> EngineStats:
        raise NotImplementedError
