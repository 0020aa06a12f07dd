"""Runs one LLM batch on the inference thread: build tensors, forward, sample.

It reads the scheduler's batch and never writes to it; what it keeps of its own (a seeded random
generator per sequence) is keyed by sequence id and dropped when the scheduler releases the sequence.
"""

from __future__ import annotations

import torch

from engine.llm.blocks import slot
from engine.llm.kv_cache import KVCache
from engine.llm.sampler import prompt_logprobs, sample
from engine.llm.scheduler import LLMBatch
from engine.llm.sequence import Sequence, StepTokens
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.request import TokenLogprob

Prepared = tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]
PROMPT_LOGPROB_ROWS = 256  # prompt positions scored at a time (bounds the [rows, vocab] logits)


class LLMRunner:
    def __init__(self, model: PagedLlama, cache: KVCache, device: str) -> None:
        self.model = model
        self.cache = cache
        self.block_size = cache.block_size
        self.device = device
        self.generators: dict[int, torch.Generator] = {}  # seq_id -> RNG, for requests with a seed

    def _prepare_prefill(self, seqs: list[Sequence]) -> Prepared:
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        lengths: list[int] = []
        last_rows: list[int] = []
        for seq in seqs:
            tokens = seq.all_token_ids  # after a preemption this includes earlier output
            ids.extend(tokens)
            positions.extend(range(len(tokens)))
            slots.extend(slot(seq.block_table, self.block_size, p) for p in range(len(tokens)))
            lengths.append(len(tokens))
            last_rows.append(len(ids) - 1)
        meta = AttentionMetadata(True, self._tensor(slots), prefill_lengths=lengths)
        return self._tensor(ids), self._tensor(positions), meta, self._tensor(last_rows)

    def _prepare_decode(self, seqs: list[Sequence]) -> Prepared:
        max_context = max(s.num_tokens for s in seqs)
        context_slots = torch.full((len(seqs), max_context), self.cache.padding_slot, dtype=torch.long)
        context_mask = torch.zeros(len(seqs), 1, 1, max_context, dtype=torch.bool)
        offsets = torch.arange(self.block_size)
        for i, seq in enumerate(seqs):
            n = seq.num_tokens
            table = torch.tensor(seq.block_table, dtype=torch.long)
            seq_slots = (table[:, None] * self.block_size + offsets).flatten()
            context_slots[i, :n] = seq_slots[:n]
            context_mask[i, ..., :n] = True
        positions = [s.num_tokens - 1 for s in seqs]
        write_slots = [slot(s.block_table, self.block_size, s.num_tokens - 1) for s in seqs]
        meta = AttentionMetadata(
            False, self._tensor(write_slots), context_slots=context_slots.to(self.device),
            context_mask=context_mask.to(self.device),
        )  # fmt: skip
        ids = self._tensor([s.last_token_id for s in seqs])
        return ids, self._tensor(positions), meta, torch.arange(len(seqs), device=self.device)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _generators_for(self, batch: LLMBatch) -> list[torch.Generator | None]:
        for seq_id in batch.released:
            self.generators.pop(seq_id, None)
        out: list[torch.Generator | None] = []
        for seq in batch.seqs:
            seed = seq.params.seed
            if seed is not None and seq.seq_id not in self.generators:
                self.generators[seq.seq_id] = torch.Generator().manual_seed(seed)
            out.append(self.generators.get(seq.seq_id))
        return out

    def run(self, batch: LLMBatch) -> list[StepTokens]:
        generators = self._generators_for(batch)
        prepare = self._prepare_prefill if batch.is_prefill else self._prepare_decode
        ids, positions, meta, logits_rows = prepare(batch.seqs)
        if batch.is_prefill and any(s.wants_prompt_logprobs for s in batch.seqs):
            return self._run_scoring_prompts(batch, generators, (ids, positions, meta, logits_rows))
        logits = self.model.forward(ids, positions, meta, self.cache, logits_rows)
        return sample(logits.cpu(), batch.seqs, generators, batch.eos_token_ids)

    def _run_scoring_prompts(
        self, batch: LLMBatch, generators: list[torch.Generator | None], prepared: Prepared
    ) -> list[StepTokens]:
        """A prefill in which some sequences asked for prompt logprobs: the same forward, keeping every
        row's hidden state so their prompt positions can be scored (the others cost nothing more)."""
        ids, positions, meta, logits_rows = prepared
        hidden = self.model.hidden_states(ids, positions, meta, self.cache)
        steps = sample(
            self.model.logits(hidden[logits_rows]).cpu(), batch.seqs, generators, batch.eos_token_ids
        )
        start = 0
        for seq, step in zip(batch.seqs, steps, strict=True):
            if seq.wants_prompt_logprobs:
                step.prompt_logprobs = self._score_prompt(hidden[start : start + seq.num_tokens], seq)
            start += seq.num_tokens
        return steps

    def _score_prompt(self, hidden: torch.Tensor, seq: Sequence) -> list[TokenLogprob | None]:
        """Row j of `hidden` predicts prompt token j + 1; the first token has no logprob."""
        top_n = seq.params.prompt_logprobs or 0
        targets = seq.prompt_token_ids
        scored: list[TokenLogprob | None] = [None]
        for lo in range(0, len(targets) - 1, PROMPT_LOGPROB_ROWS):
            hi = min(lo + PROMPT_LOGPROB_ROWS, len(targets) - 1)
            scored += prompt_logprobs(self.model.logits(hidden[lo:hi]), targets[lo + 1 : hi + 1], top_n)
        return scored
