"""Paged KV cache: fixed-size blocks, handed out and taken back by the BlockManager.

Sequences own lists of block ids, so one joining or leaving never touches another's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.sequence import Sequence


@dataclass
class KVCache:
    """K and V for every layer, laid out [layer, slot, kv_head, head_dim] (slot = block * block_size + offset)."""

    k: torch.Tensor
    v: torch.Tensor
    block_size: int

    @classmethod
    def allocate(
        cls, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
        dtype: torch.dtype, device: str,
    ) -> KVCache:  # fmt: skip
        """Blocks 0..num_blocks-1 plus one zeroed padding slot at the end.

        The rest stays uninitialised (and out of RSS until used): every real slot is written
        before it is read, and padded context positions point at the zeroed slot, whose V
        cannot inject NaN into a masked-out attention row.
        """
        shape = (num_layers, num_blocks * block_size + 1, num_kv_heads, head_dim)
        k = torch.empty(shape, dtype=dtype, device=device)
        v = torch.empty(shape, dtype=dtype, device=device)
        k[:, -1].zero_()
        v[:, -1].zero_()
        return cls(k, v, block_size)

    @property
    def padding_slot(self) -> int:
        return self.k.shape[1] - 1

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


class BlockManager:
    """Hands out blocks last-freed-first, so memory never touched stays out of RSS."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.free_blocks: list[int] = list(reversed(range(num_blocks)))

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_blocks)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence) -> bool:
        return self.blocks_needed(seq.num_tokens) <= len(self.free_blocks)

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table
        for _ in range(self.blocks_needed(seq.num_tokens)):
            seq.block_table.append(self.free_blocks.pop())

    def can_append(self, seq: Sequence) -> bool:
        """Room for the K/V of one more token (the one this decode step feeds in)."""
        needs_block = seq.num_tokens > len(seq.block_table) * self.block_size
        return not needs_block or bool(self.free_blocks)

    def append_slot(self, seq: Sequence) -> None:
        if seq.num_tokens > len(seq.block_table) * self.block_size:
            seq.block_table.append(self.free_blocks.pop())

    def free(self, seq: Sequence) -> None:
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []
        seq.num_cached_tokens = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
