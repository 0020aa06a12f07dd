"""The LLM runner's vision side (a vision-language model only): at a prefill, the media of every sequence in
it become embeddings in one batched pass of the family's vision tower (those not already cached), spliced
over the prompts' placeholder tokens; and the rotary positions of prompts with media (M-RoPE).

Runs on the inference thread and keeps, per sequence id, only the position offset of its decode tokens
(0 for 1-D RoPE families), dropped when the scheduler releases the sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.llm.sequence import Sequence
from engine.models.vision.family import VisionFamily
from engine.vision.embedding_cache import CacheKey, EmbeddingCache
from engine.vision.inputs import ProcessedMedia


def _items(seq: Sequence) -> list[ProcessedMedia]:
    return seq.multimodal.items if seq.multimodal is not None else []


class MediaEmbedder:
    def __init__(self, family: VisionFamily, cache: EmbeddingCache, device: str) -> None:
        self.family = family
        self.cache = cache
        self.device = device
        self.placeholder_ids = family.placeholder_token_ids
        self.deltas: dict[int, int] = {}  # seq_id -> decode position offset (M-RoPE), when not 0
        self.items_encoded = 0  # media items run through the vision tower
        self.cache_hits = 0  # media items whose embeddings came from the cache (or an earlier item)

    def release(self, seq_ids: list[int]) -> None:
        for seq_id in seq_ids:
            self.deltas.pop(seq_id, None)

    def embeddings(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        """Each item's embeddings, in order: cached ones looked up, the rest encoded in one family.encode."""
        keys: list[CacheKey] = [(item.kind, item.content_hash) for item in items]
        found: dict[CacheKey, torch.Tensor] = {}
        missing: dict[CacheKey, ProcessedMedia] = {}
        for key, item in zip(keys, items, strict=True):
            if key in found or key in missing:
                self.cache_hits += 1  # the same picture twice in one step: encoded once
                continue
            cached = self.cache.get(key, item.num_tokens)
            if cached is None:
                missing[key] = item
            else:
                found[key] = cached
                self.cache_hits += 1
        if missing:
            encoded = self.family.encode(list(missing.values()))
            self.items_encoded += len(missing)
            for (key, item), embeddings in zip(missing.items(), encoded, strict=True):
                if embeddings.shape[0] != item.num_tokens:
                    raise ValueError(
                        f"the vision encoder made {embeddings.shape[0]} embeddings for an item of "
                        f"{item.num_tokens} placeholder tokens"
                    )
                found[key] = embeddings
                self.cache.put(key, embeddings)
        return [found[key] for key in keys]

    @torch.inference_mode()
    def prefill_embeddings(
        self, seqs: list[Sequence], ids: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor | None:
        """The flat prefill batch's input embeddings (`embed(ids)`) with every prompt's media spliced over
        its placeholder tokens (prompt tokens only: a placeholder id the model generated stays a token); None
        when no sequence has media."""
        items = [item for seq in seqs for item in _items(seq)]
        if not items:
            return None
        rows: list[int] = []
        start = 0
        for seq in seqs:
            if _items(seq):
                prompt = seq.prompt_token_ids
                rows.extend(start + i for i, token in enumerate(prompt) if token in self.placeholder_ids)
            start += seq.num_tokens
        media = torch.cat(self.embeddings(items))
        if media.shape[0] != len(rows):
            raise ValueError(f"{len(rows)} placeholder tokens for {media.shape[0]} media embeddings")
        embeddings = embed(ids)
        index = torch.tensor(rows, dtype=torch.long, device=embeddings.device)
        return embeddings.index_copy_(0, index, media.to(embeddings.device, embeddings.dtype))

    def prefill_positions(self, seqs: list[Sequence]) -> torch.Tensor | None:
        """The flat prefill batch's positions when some prompt's are not its indices ([n], or [3, n] for
        M-RoPE: text-only rows get their index on every axis); None when all are indices."""
        parts: list[torch.Tensor] = []
        plain = True
        for seq in seqs:
            n, n_prompt = seq.num_tokens, len(seq.prompt_token_ids)
            if not _items(seq):
                parts.append(torch.arange(n))
                continue
            prompt, delta = self.family.prompt_positions(seq.prompt_token_ids, _items(seq))
            if delta:
                self.deltas[seq.seq_id] = delta
            rest = torch.arange(n_prompt, n) + delta  # a recompute's earlier output tokens
            if prompt.dim() == 2:
                rest = rest.expand(prompt.shape[0], -1)
            parts.append(torch.cat((prompt, rest), dim=-1))
            plain = plain and prompt.dim() == 1 and not delta
        if plain:
            return None
        axes = [p.shape[0] for p in parts if p.dim() == 2]
        if axes:  # M-RoPE: a text-only row's index on every axis
            parts = [p if p.dim() == 2 else p.expand(axes[0], -1) for p in parts]
        return torch.cat(parts, dim=-1).to(self.device)

    def decode_offsets(self, seqs: list[Sequence]) -> list[int]:
        """Each decode row's position offset from its index (M-RoPE's delta; 0 otherwise)."""
        return [self.deltas.get(seq.seq_id, 0) for seq in seqs]
