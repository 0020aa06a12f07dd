"""Runs one LLM batch on the inference thread: build tensors, forward, sample.

It reads the scheduler's batch and never writes to it; what it keeps of its own (a seeded random
generator per sequence; a vision-language model's decode position offsets, engine/llm/media_embedder.py)
is keyed by sequence id and dropped when the scheduler releases the sequence.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from engine.llm.blocks import slot
from engine.llm.grammar.masks import GrammarMasks, StepMasks
from engine.llm.kv_cache import KVCache
from engine.llm.lora_rows import lora_batch
from engine.llm.media_embedder import MediaEmbedder
from engine.llm.sampler import prompt_logprobs, sample
from engine.llm.scheduler import LLMBatch
from engine.llm.sequence import Sequence, StepTokens
from engine.models.lora import LoRAStore
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.request import TokenLogprob

# ids, positions, metadata, logits rows, input embeddings (a prefill with media; else None)
Prepared = tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor, torch.Tensor | None]
PROMPT_LOGPROB_ROWS = 256  # prompt positions scored at a time (bounds the [rows, vocab] logits)


class LLMRunner:
    lora: LoRAStore | None = None  # LoRA adapters' weights and device slots (set by the lane)
    media: MediaEmbedder | None = None  # a vision-language model's media (set by the lane); None: text only

    def __init__(
        self, model: PagedLlama, cache: KVCache, device: str, grammar: GrammarMasks | None = None
    ) -> None:
        self.model = model
        self.grammar = grammar  # constrained decoding: a grammar state per constrained sequence
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
        ids_tensor, embeds, positions_tensor = self._tensor(ids), None, None
        if self.media is not None:
            embeds = self.media.prefill_embeddings(seqs, ids_tensor, self.model.embed)
            positions_tensor = self.media.prefill_positions(seqs)
        if positions_tensor is None:
            positions_tensor = self._tensor(positions)
        return ids_tensor, positions_tensor, meta, self._tensor(last_rows), embeds

    def _prepare_decode(self, seqs: list[Sequence]) -> Prepared:
        # Every sequence's context slots at once from its padded block table: a few tensor ops per step
        # whatever the batch, instead of a tensor per sequence.
        lengths = [s.num_tokens for s in seqs]
        max_context = max(lengths)
        max_blocks = -(-max_context // self.block_size)
        tables = torch.tensor([s.block_table[:max_blocks] + [0] * (max_blocks - len(s.block_table[:max_blocks]))
                               for s in seqs], dtype=torch.long)  # fmt: skip
        offsets = torch.arange(self.block_size)
        context_slots = (tables[:, :, None] * self.block_size + offsets).flatten(1)[:, :max_context]
        real = torch.arange(max_context) < torch.tensor(lengths)[:, None]
        context_slots = context_slots.masked_fill(~real, self.cache.padding_slot)
        write_slots = context_slots.gather(1, torch.tensor(lengths)[:, None] - 1).flatten()
        meta = AttentionMetadata(
            False, write_slots.to(self.device), context_slots=context_slots.to(self.device),
            context_mask=real[:, None, None, :].to(self.device),
        )  # fmt: skip
        ids = self._tensor([s.last_token_id for s in seqs])
        if self.media is not None:
            lengths = [n + offset for n, offset in zip(lengths, self.media.decode_offsets(seqs), strict=True)]
        positions = self._tensor([n - 1 for n in lengths])
        return ids, positions, meta, torch.arange(len(seqs), device=self.device), None

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def _generators_for(self, batch: LLMBatch) -> list[torch.Generator | None]:
        for seq_id in batch.released:
            self.generators.pop(seq_id, None)
        if self.media is not None:
            self.media.release(batch.released)
        out: list[torch.Generator | None] = []
        for seq in batch.seqs:
            seed = seq.params.seed
            if seed is not None and seq.seq_id not in self.generators:
                self.generators[seq.seq_id] = torch.Generator().manual_seed(seed)
            out.append(self.generators.get(seq.seq_id))
        return out

    def _grammar_masks(self, seqs: list[Sequence]) -> StepMasks | None:
        return self.grammar.for_step(seqs) if self.grammar is not None else None

    def run(self, batch: LLMBatch) -> list[list[StepTokens]]:
        """Each sequence's new tokens, in order: one for a prefill, up to batch.steps[i] for a decode."""
        generators = self._generators_for(batch)
        if self.grammar is not None:
            self.grammar.release(batch.released)
        if batch.is_prefill:
            return [[step] for step in self._run_prefill(batch, generators)]
        return self._run_decode(batch, generators)

    def _run_prefill(self, batch: LLMBatch, generators: list[torch.Generator | None]) -> list[StepTokens]:
        masks = self._grammar_masks(batch.seqs)
        prepared = self._prepare_prefill(batch.seqs)
        ids, positions, meta, logits_rows, embeds = prepared
        meta.lora = lora_batch(self.lora, batch, meta)
        if any(s.wants_prompt_logprobs for s in batch.seqs):
            steps = self._run_scoring_prompts(batch, generators, prepared, masks)
        else:
            logits = self.model.forward(ids, positions, meta, self.cache, logits_rows, embeds)
            steps = sample(logits.cpu(), batch.seqs, generators, batch.eos_token_ids, masks)
        if self.grammar is not None:
            self.grammar.advance(batch.seqs, steps)
        return steps

    def _run_decode(
        self, batch: LLMBatch, generators: list[torch.Generator | None]
    ) -> list[list[StepTokens]]:
        """Multi-step decoding: up to batch.steps[i] tokens per sequence in one round trip, each inner step
        a full forward + sample (grammar masks, penalties and seeds as in a single step). A sequence stops
        early on a stop token or an abort; everyone stops when new work arrives (batch.interrupt)."""
        seqs = batch.seqs
        budget = batch.steps if batch.steps and batch.lora is None else [1] * len(seqs)
        made: list[list[StepTokens]] = [[] for _ in seqs]
        rows = list(range(len(seqs)))
        while rows:
            view = [_ahead(seqs[i], made[i]) for i in rows]
            steps = self._decode_step(batch, view, [generators[i] for i in rows])
            for i, step in zip(rows, steps, strict=True):
                made[i].append(step)
            if batch.interrupt is not None and batch.interrupt.is_set():
                break
            rows = [
                i for i in rows
                if len(made[i]) < budget[i] and not seqs[i].aborted
                and not _ends(seqs[i], made[i][-1].token_id, batch.eos_token_ids)
            ]  # fmt: skip
        return made

    def _decode_step(
        self, batch: LLMBatch, seqs: list[Sequence], generators: list[torch.Generator | None]
    ) -> list[StepTokens]:
        masks = self._grammar_masks(seqs)
        ids, positions, meta, logits_rows, _ = self._prepare_decode(seqs)
        meta.lora = lora_batch(self.lora, batch, meta)  # a LoRA batch runs one step: seqs is batch.seqs
        logits = self.model.forward(ids, positions, meta, self.cache, logits_rows)
        steps = sample(logits.cpu(), seqs, generators, batch.eos_token_ids, masks)
        if self.grammar is not None:
            self.grammar.advance(seqs, steps)
        return steps

    def _run_scoring_prompts(
        self, batch: LLMBatch, generators: list[torch.Generator | None], prepared: Prepared,
        masks: StepMasks | None = None,
    ) -> list[StepTokens]:  # fmt: skip
        """A prefill in which some sequences asked for prompt logprobs: the same forward, keeping every
        row's hidden state so their prompt positions can be scored (the others cost nothing more)."""
        ids, positions, meta, logits_rows, embeds = prepared
        hidden = self.model.hidden_states(ids, positions, meta, self.cache, embeds)
        steps = sample(
            self.model.logits(hidden[logits_rows]).cpu(), batch.seqs, generators, batch.eos_token_ids, masks
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


def _ahead(seq: Sequence, made: list[StepTokens]) -> Sequence:
    """What an inner step reads of a sequence: a copy with the tokens made so far in this round trip (the
    scheduler's own object is never written by the runner)."""
    if not made:
        return seq
    return replace(seq, output_token_ids=seq.output_token_ids + [step.token_id for step in made])


def _ends(seq: Sequence, token_id: int, eos_token_ids: frozenset[int]) -> bool:
    """A token after which the sequence makes no more (the scheduler decides stop strings and lengths)."""
    params = seq.params
    return token_id in params.stop_token_ids or (not params.ignore_eos and token_id in eos_token_ids)
