"""The runner's side of LoRA (inference thread): turn the scheduler's LoRAStep into the model's per-row
LoRABatch, copying newly scheduled adapters into their device slots first."""

from __future__ import annotations

from engine.llm.scheduler import LLMBatch
from engine.models.lora import LoRABatch, LoRAStore
from engine.models.paged_llama import AttentionMetadata


def lora_batch(store: LoRAStore | None, batch: LLMBatch, meta: AttentionMetadata) -> LoRABatch | None:
    """None (the base model for every row, at no cost) unless some sequence in `batch` has an adapter."""
    step = batch.lora
    if store is None or step is None:
        return None
    store.forget(step.dropped)
    if not step.seq_slots:
        return None
    tokens = meta.prefill_lengths if meta.is_prefill and meta.prefill_lengths else [1] * len(batch.seqs)
    rows: list[int] = []
    for seq, count in zip(batch.seqs, tokens, strict=True):
        rows += [step.seq_slots.get(seq.seq_id, -1)] * count
    return store.batch(step.assigned, rows)
