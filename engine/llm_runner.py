"""Runs one LLM batch on the inference thread: build tensors, forward, sample."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.kv_cache import BlockManager, KVCache
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.sampler import sample
from engine.sequence import Sequence, StepTokens


@dataclass
class LLMBatch:
    """Either packed prefills or one decode token per running sequence; never both."""

    seqs: list[Sequence]
    is_prefill: bool


class LLMRunner:
    def __init__(self, model: PagedLlama, cache: KVCache, block_manager: BlockManager, device: str) -> None:
        self.model = model
        self.cache = cache
        self.blocks = block_manager
        self.device = device

    def _prepare_prefill(
        self, seqs: list[Sequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        lengths: list[int] = []
        last_rows: list[int] = []
        for seq in seqs:
            tokens = seq.all_token_ids  # after a preemption this includes earlier output
            ids.extend(tokens)
            positions.extend(range(len(tokens)))
            slots.extend(self.blocks.slot(seq, p) for p in range(len(tokens)))
            lengths.append(len(tokens))
            last_rows.append(len(ids) - 1)
        meta = AttentionMetadata(True, self._tensor(slots), prefill_lengths=lengths)
        return self._tensor(ids), self._tensor(positions), meta, self._tensor(last_rows)

    def _prepare_decode(
        self, seqs: list[Sequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        max_context = max(s.num_tokens for s in seqs)
        context_slots = torch.full((len(seqs), max_context), self.cache.padding_slot, dtype=torch.long)
        context_mask = torch.zeros(len(seqs), 1, 1, max_context, dtype=torch.bool)
        for i, seq in enumerate(seqs):
            n = seq.num_tokens
            table = torch.tensor(seq.block_table, dtype=torch.long)
            seq_slots = (
                table[:, None] * self.blocks.block_size + torch.arange(self.blocks.block_size)
            ).flatten()
            context_slots[i, :n] = seq_slots[:n]
            context_mask[i, ..., :n] = True
        positions = [s.num_tokens - 1 for s in seqs]
        write_slots = [self.blocks.slot(s, s.num_tokens - 1) for s in seqs]
        meta = AttentionMetadata(
            False, self._tensor(write_slots), context_slots=context_slots.to(self.device),
            context_mask=context_mask.to(self.device),
        )  # fmt: skip
        ids = self._tensor([s.last_token_id for s in seqs])
        return ids, self._tensor(positions), meta, torch.arange(len(seqs), device=self.device)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def run(self, batch: LLMBatch) -> list[StepTokens]:
        prepare = self._prepare_prefill if batch.is_prefill else self._prepare_decode
        ids, positions, meta, logits_rows = prepare(batch.seqs)
        logits = self.model.forward(ids, positions, meta, self.cache, logits_rows)
        return sample(logits.cpu(), batch.seqs)
