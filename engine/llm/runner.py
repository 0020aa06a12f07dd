"""Runs one LLM batch on the inference thread: build tensors, forward, sample.

It reads the scheduler's batch and never writes to it; what it keeps of its own (a seeded random
generator per sequence) is keyed by sequence id and dropped when the scheduler releases the sequence.
"""

from __future__ import annotations

import torch

from engine.llm.blocks import slot
from engine.llm.kv_cache import KVCache
from engine.llm.sampler import sample
from engine.llm.scheduler import LLMBatch
from engine.llm.sequence import Sequence, StepTokens
from engine.models.paged_llama import AttentionMetadata, PagedLlama

Prepared = tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]


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
        logits = self.model.forward(ids, positions, meta, self.cache, logits_rows)
        return sample(logits.cpu(), batch.seqs, generators)
