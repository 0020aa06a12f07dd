"""Continuous batching for the LLM: admit waiting sequences, decode the running ones, retire finished ones."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from engine.llm.blocks import BlockManager
from engine.llm.lora_manager import LoRAManager, LoRAStep
from engine.llm.sequence import Sequence, SequenceStatus, StepTokens
from engine.request import FinishReason, GenerationOutput, Priority
from engine.stats import EngineStats


@dataclass
class LLMBatch:
    """One step's LLM work: packed prefills or one decode token per running sequence, never both.

    The runner only reads it. `released` lists sequences finished since the last batch, so the runner
    can drop what it keeps for them (seeded random generators). `eos_token_ids`: what a request's
    min_tokens holds back."""

    seqs: list[Sequence]
    is_prefill: bool
    released: list[int] = field(default_factory=list)
    eos_token_ids: frozenset[int] = frozenset()
    lora: LoRAStep | None = None  # the step's LoRA adapters, set by the lane; None: none in use
    # decode: how many tokens each sequence may make in this round trip (their slots are reserved);
    # empty: one each. `interrupt` set: new work arrived, the runner stops after its current step.
    steps: list[int] = field(default_factory=list)
    interrupt: threading.Event | None = None


class LLMScheduler:
    loras: LoRAManager | None = None  # set by the lane: caps the adapters one step mixes

    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_prefill_tokens: int, max_model_len: int,
                 eos_token_ids: list[int], stats: EngineStats, num_steps: int = 1,
                 max_prefill_media: int = 1) -> None:  # fmt: skip
        self.blocks = blocks
        # Images/videos a prefill step may carry (each is a vision-encoder pass at the step's start): bounds
        # how long the step holds everyone else's next token. After such a step, running sequences decode
        # once before the next prefill, so image uploads do not freeze streams that are under way.
        self.max_prefill_media = max_prefill_media
        self._decode_owed = False
        self.num_steps = num_steps  # decode steps per round trip while nothing waits (multi-step)
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.stats = stats
        self.waiting: dict[Priority, deque[Sequence]] = {p: deque() for p in Priority}
        self.running: list[Sequence] = []
        self._released: list[int] = []

    def add(self, seq: Sequence) -> None:
        self.waiting[seq.priority].append(seq)

    def schedule(self) -> LLMBatch | None:
        self._retire_aborted()
        batch = None if self._decode_owed and self.running else self._schedule_prefill()
        self._decode_owed = batch is not None and any(s.multimodal is not None for s in batch.seqs)
        if batch is None and self.running:
            batch = self._schedule_decode()
        if batch is not None:
            batch.released, self._released = self._released, []
            batch.eos_token_ids = self.eos_token_ids
        self._update_stats()
        return batch

    def _schedule_prefill(self) -> LLMBatch | None:
        admitted: list[Sequence] = []
        tokens = media = 0
        for priority in Priority:
            queue = self.waiting[priority]
            while queue and len(self.running) + len(admitted) < self.max_num_seqs:
                seq = queue[0]
                if admitted and tokens + seq.num_tokens > self.max_prefill_tokens:
                    break
                seq_media = len(seq.multimodal.items) if seq.multimodal is not None else 0
                if admitted and seq_media and media + seq_media > self.max_prefill_media:
                    break
                if not self.blocks.can_allocate(seq):
                    break  # the cache is full: it waits, it is never dropped
                if self.loras is not None and not self.loras.can_run(seq):
                    break  # every LoRA slot is held by running sequences of other adapters
                queue.popleft()
                self.blocks.allocate(seq)
                if self.loras is not None:
                    self.loras.start(seq)
                seq.status = SequenceStatus.RUNNING
                admitted.append(seq)
                tokens += seq.num_tokens
                media += seq_media
        if not admitted:
            return None
        self.running.extend(admitted)
        return LLMBatch(admitted, is_prefill=True)

    def _schedule_decode(self) -> LLMBatch:
        # Make room for this step's token; when blocks run out, the newest sequences yield
        # theirs and go back to the front of the queue (recomputed later: nothing is lost).
        scheduled: list[Sequence] = []
        candidates = sorted(self.running, key=lambda s: (s.priority, s.seq_id))
        while candidates:
            seq = candidates.pop(0)
            while not self.blocks.can_append(seq) and candidates:
                self._preempt(candidates.pop())
            if not self.blocks.can_append(seq):
                self._preempt(seq)
                continue
            self.blocks.append_slot(seq)
            scheduled.append(seq)
        return LLMBatch(scheduled, is_prefill=False, steps=self._reserve_steps(scheduled))

    def _reserve_steps(self, seqs: list[Sequence]) -> list[int]:
        """Tokens each sequence may make in this round trip, their cache slots reserved; [] (one each) when
        something waits or the cache is short. A request that arrives meanwhile interrupts the batch."""
        if self.num_steps <= 1 or any(self.waiting.values()):
            return []
        steps = [
            max(1, min(self.num_steps, s.params.max_tokens - len(s.output_token_ids),
                       self.max_model_len - s.num_tokens))
            for s in seqs
        ]  # fmt: skip
        if all(n == 1 for n in steps):
            return []
        needed = sum(
            self.blocks.blocks_to_reach(s, s.num_tokens + n - 1) for s, n in zip(seqs, steps, strict=True)
        )
        if needed > len(self.blocks.free_blocks):
            return []
        for seq, n in zip(seqs, steps, strict=True):
            self.blocks.reserve(seq, seq.num_tokens + n - 1)
        return steps

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        if self.loras is not None:
            self.loras.stop(seq, finished=False)
        seq.status = SequenceStatus.WAITING
        self.running.remove(seq)
        self.waiting[seq.priority].appendleft(seq)

    def _retire_aborted(self) -> None:
        for seq in [s for s in self.running if s.aborted]:
            self._finish(seq, "abort")
        for queue in self.waiting.values():
            for seq in [s for s in queue if s.aborted]:
                queue.remove(seq)
                self._finish(seq, "abort")

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.finish_reason = reason
        seq.status = SequenceStatus.FINISHED
        self.blocks.free(seq)
        if self.loras is not None:
            self.loras.stop(seq, finished=True)
        self._released.append(seq.seq_id)
        if seq in self.running:
            self.running.remove(seq)
        if reason == "abort":
            self.stats.llm_requests_aborted += 1
        else:
            self.stats.llm_requests_finished += 1

    def fail(self, batch: LLMBatch, error: BaseException) -> None:
        """The batch's step raised: its requests end with `error` (retired at the next schedule)."""
        for seq in batch.seqs:
            seq.aborted = True
            seq.outputs.put_nowait(error)

    def fail_all(self, error: BaseException) -> None:
        """Shutdown: every unfinished request gets `error`."""
        for seq in list(self.running) + [s for q in self.waiting.values() for s in q]:
            seq.outputs.put_nowait(error)

    def pending(self) -> int:
        return len(self.running) + sum(len(q) for q in self.waiting.values())

    def postprocess(self, batch: LLMBatch, sampled: list[list[StepTokens]]) -> int:
        """Record each sequence's new token, stream it out, retire finished sequences. Returns tokens made."""
        if batch.is_prefill:
            self.stats.prompt_tokens_total += sum(s.num_tokens for s in batch.seqs)
        else:
            self.stats.llm_last_batch_size = len(batch.seqs)
            self.stats.llm_max_batch_size = max(self.stats.llm_max_batch_size, len(batch.seqs))
        made = 0
        for seq, steps in zip(batch.seqs, sampled, strict=True):
            for step in steps:  # a multi-step round trip: in order, until the sequence finishes
                if seq.status is not SequenceStatus.RUNNING or seq.aborted:
                    break  # aborted while the step ran (retired at the next schedule()), or finished
                self._append(seq, step)
                made += 1
        self._update_stats()
        return made

    def _append(self, seq: Sequence, step: StepTokens) -> None:
        seq.output_token_ids.append(step.token_id)
        seq.num_cached_tokens = seq.num_tokens - 1
        params = seq.params
        assert seq.detokenizer is not None
        matched: int | str | None = None
        reason: FinishReason | None = None
        if step.token_id in params.stop_token_ids or (
            not params.ignore_eos and step.token_id in self.eos_token_ids
        ):
            matched, reason = step.token_id, "stop"
        else:
            # Before min_tokens, stop strings do not end the sequence (vLLM's rule).
            stop_string = seq.detokenizer.add_token(
                step.token_id, check_stop=len(seq.output_token_ids) >= params.min_tokens
            )
            if stop_string is not None:
                matched, reason = stop_string, "stop"
            elif len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
                reason = "length"
        if reason is not None:
            self._finish(seq, reason)
        seq.outputs.put_nowait(
            GenerationOutput(
                token_ids=[step.token_id],
                text=seq.detokenizer.release(finished=reason is not None),
                logprobs=[step.logprob] if step.logprob is not None else None,
                finish_reason=reason,
                prompt_tokens=len(seq.prompt_token_ids),
                completion_tokens=len(seq.output_token_ids),
                matched_stop=matched,
                prompt_logprobs=step.prompt_logprobs,
            )
        )

    def _update_stats(self) -> None:
        self.stats.llm_waiting = sum(len(q) for q in self.waiting.values())
        self.stats.llm_running = len(self.running)
        self.stats.kv_blocks_used = self.blocks.num_used
