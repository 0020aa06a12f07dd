"""One engine step's plan (made by the schedulers) and result (made on the inference thread)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.asr_scheduler import ASRWork, WhisperGroup
from engine.llm_runner import LLMBatch
from engine.sequence import StepTokens
from engine.whisper_runner import WhisperRowOutput


@dataclass
class StepPlan:
    llm: LLMBatch | None
    asr: ASRWork

    @property
    def empty(self) -> bool:
        return self.llm is None and self.asr.empty


@dataclass
class StepResult:
    llm_tokens: list[StepTokens] | None = None
    llm_error: BaseException | None = None
    asr_merges: list[tuple[list[WhisperGroup], WhisperGroup]] = field(
        default_factory=list
    )  # (these, into this)
    asr_rows: list[tuple[WhisperGroup, list[WhisperRowOutput]]] = field(default_factory=list)
    asr_errors: list[tuple[WhisperGroup, BaseException]] = field(default_factory=list)
