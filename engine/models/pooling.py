"""The pooling models' forward pass: a Hugging Face encoder (or a causal LM) plus the model's own pooling,
or a sequence classifier's logits. Padded batches in, one float32 row per input out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from engine.pooling.request import PoolingModelInfo

PoolingMode = Literal["mean", "cls", "last", "max", "mean_sqrt_len"]


@dataclass
class PoolingBundle:
    info: PoolingModelInfo
    model: (
        torch.nn.Module
    )  # a base model (hidden states) for embed, a *ForSequenceClassification for classify
    tokenizer: Any
    pooling: PoolingMode  # embed: how token states become one vector
    uses_token_types: bool  # the model takes token_type_ids (BERT-like)
    pad_token_id: int
    vocab_size: int

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        """[batch, tokens] right-padded ids and mask -> [batch, width]: pooled vectors or class logits."""
        kwargs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_token_types and types is not None:
            kwargs["token_type_ids"] = types
        out = self.model(**kwargs)
        if self.info.kind == "classify":
            return out.logits
        return pool(out.last_hidden_state, mask, self.pooling)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """Token states -> one vector per row, counting real tokens only (sentence-transformers' rules)."""
    if mode == "cls":
        return hidden[:, 0]
    lengths = mask.sum(dim=1)
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts if mode == "mean" else counts.sqrt())
