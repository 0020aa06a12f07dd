"""What front ends hand the pooling lane (embed, classify, score) and what comes back. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PoolingTaskName = Literal["embed", "classify", "score"]
PoolingKind = Literal["embed", "classify"]  # what a model computes: a vector, or class logits
Prompt = str | list[int]  # a text, or token ids the caller already made

# OpenAI's limit on inputs per embeddings request; the score and rerank routes share it.
MAX_POOLING_INPUTS = 2048


@dataclass(frozen=True)
class PoolingModelInfo:
    name: str
    kind: PoolingKind
    dimensions: int  # embedding width, or the number of classes
    max_model_len: int  # tokens per input (the model's max_seq_length)
    normalize: bool  # embed: vectors are L2-normalized by default (the model's own config)
    matryoshka: tuple[int, ...] | None  # widths `dimensions` may ask for (None: not a matryoshka model)
    labels: tuple[str, ...] = ()  # classify: id2label, in class order
    chat_template: bool = False  # `messages` input is possible

    @property
    def cross_encoder(self) -> bool:
        """A classifier with one output: it scores a pair of texts (rerankers)."""
        return self.kind == "classify" and self.dimensions == 1

    @property
    def task(self) -> str:
        """What /v1/models says it does, in vLLM's task names."""
        if self.kind == "embed":
            return "embed"
        return "score" if self.cross_encoder else "classify"


@dataclass
class PoolingRequest:
    """embed: one vector per input. classify: class probabilities per input (a classifier model).
    score: one score per (text_1, text_2) pair: the cosine of two embeddings, or a cross-encoder's
    output for the pair, whichever the model is."""

    task: PoolingTaskName
    inputs: list[Prompt] = field(default_factory=list)  # embed, classify
    pairs: list[tuple[str, str]] = field(default_factory=list)  # score
    messages: list[dict[str, Any]] | None = None  # embed: one chat-style input, rendered by the template
    add_generation_prompt: bool = False  # with messages
    model: str | None = None  # None: the first pooling model served
    # Inputs longer than this many tokens are cut to it (-1: the model's max length); None: too long is an error.
    truncate_prompt_tokens: int | None = None
    truncation_side: Literal["left", "right"] = "right"  # right keeps the first tokens
    add_special_tokens: bool = True
    # embed: L2-normalize; classify/score: softmax (sigmoid for one output). None: the model's default.
    activation: bool | None = None
    dimensions: int | None = None  # embed: a matryoshka model's vectors cut to this width


@dataclass
class PoolingOutput:
    """The whole result at once (pooling does not stream)."""

    data: list[np.ndarray]  # embed: float32 vectors; classify: class probabilities (or logits); score: []
    prompt_tokens: int
    scores: list[float] = field(default_factory=list)  # score: one per pair

    @property
    def finished(self) -> bool:
        return True
