"""One LLM sequence as the scheduler tracks it."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from enum import Enum, auto

from engine.llm.detokenizer import IncrementalDetokenizer
from engine.request import FinishReason, GenerationOutput, Priority, TokenLogprob
from engine.sampling import SamplingParams
from engine.vision.inputs import MultimodalInputs

_ids = itertools.count()


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)  # identity: the schedulers look sequences up in lists
class Sequence:
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: Priority
    outputs: asyncio.Queue[GenerationOutput | BaseException]
    seq_id: int = field(default_factory=lambda: next(_ids))
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # tokens whose K/V are in the cache
    aborted: bool = False
    finish_reason: FinishReason | None = None
    detokenizer: IncrementalDetokenizer | None = None
    lora_id: int | None = None  # the LoRA adapter it runs with (engine/llm/lora_manager.py); None: base
    multimodal: MultimodalInputs | None = None  # its media, spliced in at every prefill (a recompute too)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Asked for, and not yet computed: a recompute after preemption does not repeat them."""
        return self.params.prompt_logprobs is not None and not self.output_token_ids

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]


@dataclass
class StepTokens:
    """What the runner sampled for one sequence in one step."""

    token_id: int
    logprob: TokenLogprob | None
    prompt_logprobs: list[TokenLogprob | None] | None = None  # asked for, and this was the first prefill
