"""The paged KV cache tensors (runner side); engine/llm/blocks.py decides which blocks a sequence owns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.memory import release_pages


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

    def release_blocks(self, runs: list[tuple[int, int]]) -> int:
        """Give the pages of block ranges [start, end) back to the OS (CPU only); bytes released.

        Every slot is written before it is read, so what the pages read back as does not matter; the
        padding slot lies past the last block and is never released."""
        if self.k.device.type != "cpu":
            return 0
        released = 0
        for tensor in (self.k, self.v):
            slot_bytes = tensor.stride(1) * tensor.element_size()
            layer_bytes = tensor.stride(0) * tensor.element_size()
            block_bytes = slot_bytes * self.block_size
            for layer in range(tensor.shape[0]):
                base = tensor.data_ptr() + layer * layer_bytes
                for start, end in runs:
                    released += release_pages(base + start * block_bytes, (end - start) * block_bytes)
        return released
