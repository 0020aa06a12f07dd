"""What the paged LLM forward needs of a vision-language model family (one module per family here).

The text decoder runs in engine/models/paged_llama.py like any LLM; a family adds how its media become
embeddings (batched over every item of a prefill step) and, for M-RoPE models, the positions of a prompt.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import PretrainedConfig

from engine.vision.inputs import ProcessedMedia, VisionInfo


class RotaryEmbedding(Protocol):
    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for a flat batch's positions ([n], or [3, n] for M-RoPE), each [n, 1, head_dim]."""
        ...


class VisionFamily(Protocol):
    info: VisionInfo
    text_config: PretrainedConfig
    text_model: torch.nn.Module  # embed_tokens, layers (self_attn q/k/v/o_proj, mlp, norms), norm
    lm_head: torch.nn.Module
    placeholder_token_ids: frozenset[int]  # prompt tokens whose embeddings an item's replace

    def rotary(self, max_positions: int) -> RotaryEmbedding: ...

    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        """Each item's embeddings, [item.num_tokens, hidden] in the text model's dtype: one batched pass
        of the vision tower (and projector) over all of them."""
        ...

    def prompt_positions(
        self, prompt_token_ids: list[int], items: list[ProcessedMedia]
    ) -> tuple[torch.Tensor, int]:
        """The prompt's rotary positions ([n], or [3, n] for M-RoPE) and the offset `delta` such that the
        token at index p >= n is at position p + delta (0 for 1-D RoPE: positions are indices)."""
        ...
