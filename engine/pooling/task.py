"""One pooling request as the scheduler tracks it: its rows (one forward row per input), their raw results,
and the finishing touches (normalize, matryoshka cut, softmax, cosine) once every row is in. Numpy, no torch.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import numpy as np

from engine.pooling.prepare import Prepared
from engine.pooling.request import PoolingModelInfo, PoolingOutput, PoolingRequest

_ids = itertools.count()


@dataclass(eq=False)
class PoolingRow:
    """One input waiting for, or in, a forward pass."""

    task: PoolingTask
    index: int  # in task.results
    token_ids: list[int]
    type_ids: list[int] | None
    row_id: int = field(default_factory=lambda: next(_ids))

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def model(self) -> str:
        return self.task.model.name


@dataclass(eq=False)
class PoolingTask:
    request: PoolingRequest
    model: PoolingModelInfo
    prepared: Prepared
    outputs: asyncio.Queue[PoolingOutput | BaseException]
    rows: list[PoolingRow] = field(default_factory=list)
    results: list[np.ndarray | None] = field(default_factory=list)
    missing: int = 0
    aborted: bool = False  # the client left
    done: bool = False  # its output (or error) is queued

    def __post_init__(self) -> None:
        self.rows = [
            PoolingRow(self, i, enc.token_ids, enc.type_ids) for i, enc in enumerate(self.prepared.inputs)
        ]
        self.results = [None] * len(self.rows)
        self.missing = len(self.rows)

    def record(self, row: PoolingRow, vector: np.ndarray) -> bool:
        """A row's raw result (pooled hidden state, or logits); True when the task is complete."""
        if self.results[row.index] is None:
            self.results[row.index] = vector
            self.missing -= 1
        return self.missing == 0

    def finish(self, last: PoolingOutput | BaseException) -> None:
        self.done = True
        self.outputs.put_nowait(last)

    def output(self) -> PoolingOutput:
        raw = [r for r in self.results if r is not None]
        assert len(raw) == len(self.results)
        tokens = self.prepared.prompt_tokens
        request = self.request
        if self.prepared.pairs is not None:  # an embedding model scores by cosine
            return PoolingOutput([], tokens, [cosine(raw[a], raw[b]) for a, b in self.prepared.pairs])
        activate = request.activation
        if self.model.kind == "embed":
            normalize = self.model.normalize if activate is None else activate
            return PoolingOutput([embedding(v, request.dimensions, normalize) for v in raw], tokens)
        probs = [class_probs(v, activate is not False) for v in raw]
        if request.task == "score":  # a cross-encoder: its one output is the score
            return PoolingOutput([], tokens, [float(p[0]) for p in probs])
        return PoolingOutput(probs, tokens)


def embedding(vector: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """A matryoshka model's vector is cut first, then normalized (so the short vector has norm 1 too)."""
    out = vector[:dimensions] if dimensions else vector
    if normalize:
        out = out / max(float(np.linalg.norm(out)), 1e-12)
    return out.astype(np.float32, copy=False)


def class_probs(logits: np.ndarray, activate: bool) -> np.ndarray:
    """Softmax over the classes (sigmoid for a single output), or the logits as they are."""
    logits = logits.astype(np.float32, copy=False)
    if not activate:
        return logits
    if logits.shape[0] == 1:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max())
    return (shifted / shifted.sum()).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = max(float(np.linalg.norm(a64) * np.linalg.norm(b64)), 1e-12)
    return float(a64 @ b64 / denom)
