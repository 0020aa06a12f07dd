"""Executes an ASR plan on the inference thread: tensors stay here, plain data goes back.

The runner keeps every running batch's tensors under the scheduler's batch id. Per model, each step it
starts the new batches, merges everything of that model into one batch, and advances it one token.
Each batch fails alone: a bad start or step ends only that batch's requests.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from engine.asr.batch import WhisperBatch
from engine.asr.model_runner import WhisperRunner
from engine.asr.plan import ASRPlan, ASRResult, MergedBatch, ModelStep

log = logging.getLogger(__name__)


@dataclass
class _Held:
    runner: WhisperRunner  # of the batch's model
    batch: WhisperBatch


class ASRRunner:
    def __init__(self, runners: dict[str, WhisperRunner]) -> None:
        self.runners = runners  # by model name
        self.batches: dict[int, _Held] = {}  # by batch id

    def run(self, plan: ASRPlan) -> ASRResult:
        result = ASRResult()
        self._forget_unplanned(plan)
        for cancel in plan.cancels:
            held = self.batches.get(cancel.batch_id)
            if held is not None:
                held.runner.cancel(held.batch, cancel.row)
                if held.batch.done:
                    del self.batches[cancel.batch_id]
        for step in plan.models:
            self._run_model(self.runners[step.model], step, result)
        return result

    def _forget_unplanned(self, plan: ASRPlan) -> None:
        """Batches the scheduler let go of (every row cancelled, or the step failed): free their tensors."""
        self.forget_except(plan.batch_ids)

    def forget_except(self, live: AbstractSet[int]) -> None:
        for batch_id in [i for i in self.batches if i not in live]:
            del self.batches[batch_id]

    def _run_model(self, runner: WhisperRunner, step: ModelStep, result: ASRResult) -> None:
        """Start new batches, merge every batch of this model into one, and advance it a token."""
        for start in step.starts:
            try:
                self.batches[start.batch_id] = _Held(runner, runner.start(list(start.jobs)))
            except Exception as exc:
                log.exception("whisper batch failed to start")
                result.errors[start.batch_id] = exc
        present = [i for i in step.batch_ids if i in self.batches]
        if not present:
            return
        target = present[0]
        if len(present) > 1:
            try:
                merged, kept = runner.merge([self.batches.pop(i).batch for i in present])
            except Exception as exc:
                log.exception("merging whisper batches failed")
                result.errors.update(dict.fromkeys(present, exc))
                return
            assert step.merged_id is not None  # the plan names two or more batches
            target = step.merged_id
            kept_rows = tuple((i, tuple(rows)) for i, rows in zip(present, kept, strict=True))
            result.merges.append(MergedBatch(target, kept_rows))
            if not any(kept):
                return  # every row was cancelled: nothing left to advance
            self.batches[target] = _Held(runner, merged)
        self._step(target, result)

    def _step(self, batch_id: int, result: ASRResult) -> None:
        held = self.batches[batch_id]
        try:
            result.outputs[batch_id] = held.runner.step(held.batch)
        except Exception as exc:
            log.exception("whisper batch failed")
            result.errors[batch_id] = exc
            del self.batches[batch_id]
            return
        if held.batch.done:
            del self.batches[batch_id]
