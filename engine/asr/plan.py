"""What the ASR scheduler asks of one step, and what the runner reports back: plain data, no torch.

Batches are named by integer ids the scheduler hands out. The runner keeps each batch's tensors under its
id; the scheduler keeps its own bookkeeping (which request each row belongs to) under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.asr.job import WhisperJob, WhisperRowOutput


@dataclass(frozen=True)
class BatchStart:
    """Encode these jobs and prefill their prompts: a new batch, `batch_id`."""

    batch_id: int
    jobs: tuple[WhisperJob, ...]


@dataclass(frozen=True)
class ModelStep:
    """One model's share of the step: start the new batches, then advance them and the running ones by
    one token, all in one decoder batch: with two or more, they are first merged into `merged_id`."""

    model: str
    starts: tuple[BatchStart, ...]
    running: tuple[int, ...]  # batch ids started in earlier steps, in this order after the new ones
    merged_id: int | None  # set when the step holds two or more batches

    @property
    def batch_ids(self) -> list[int]:
        return [start.batch_id for start in self.starts] + list(self.running)


@dataclass(frozen=True)
class RowCancel:
    batch_id: int
    row: int


@dataclass(frozen=True)
class ASRPlan:
    cancels: tuple[RowCancel, ...]  # rows whose requests went away: finish them before anything runs
    models: tuple[ModelStep, ...]

    @property
    def batch_ids(self) -> set[int]:
        """Every batch the scheduler still holds; the runner forgets any other."""
        ids = {i for model in self.models for i in model.batch_ids}
        return ids | {cancel.batch_id for cancel in self.cancels}


@dataclass(frozen=True)
class MergedBatch:
    """Batches now decoding as one, `batch_id`: `kept` lists, per source batch id, which of its rows
    the merged batch holds, in order (finished rows are left out)."""

    batch_id: int
    kept: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass
class ASRResult:
    merges: list[MergedBatch] = field(default_factory=list)
    outputs: dict[int, list[WhisperRowOutput]] = field(default_factory=dict)  # per stepped batch, per row
    errors: dict[int, BaseException] = field(default_factory=dict)  # per failed batch: its requests fail
