"""The KV cache's block bookkeeping (pure Python): which blocks each sequence owns.

Sequences own lists of block ids, so one joining or leaving never touches another's cache. The tensors
themselves live in engine/llm/kv_cache.py, on the runner's side.
"""

from __future__ import annotations

from engine.llm.sequence import Sequence


class BlockManager:
    """Hands out blocks last-freed-first, so memory never touched stays out of RSS."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.free_blocks: list[int] = list(reversed(range(num_blocks)))
        self.touched: set[int] = set()  # blocks handed out since their memory was last released

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
            seq.block_table.append(self._take())

    def can_append(self, seq: Sequence) -> bool:
        """Room for the K/V of one more token (the one this decode step feeds in)."""
        needs_block = seq.num_tokens > len(seq.block_table) * self.block_size
        return not needs_block or bool(self.free_blocks)

    def append_slot(self, seq: Sequence) -> None:
        if seq.num_tokens > len(seq.block_table) * self.block_size:
            seq.block_table.append(self._take())

    def blocks_to_reach(self, seq: Sequence, num_tokens: int) -> int:
        """Blocks `seq` still lacks to hold `num_tokens` tokens."""
        return max(0, self.blocks_needed(num_tokens) - len(seq.block_table))

    def reserve(self, seq: Sequence, num_tokens: int) -> None:
        """Room for `num_tokens` tokens (a multi-step round trip's slots, taken up front)."""
        for _ in range(self.blocks_to_reach(seq, num_tokens)):
            seq.block_table.append(self._take())

    def _take(self) -> int:
        block = self.free_blocks.pop()
        self.touched.add(block)
        return block

    def take_releasable(self) -> list[tuple[int, int]]:
        """Free blocks touched since the last call, as runs [start, end); they count as untouched again."""
        free = sorted(self.touched.intersection(self.free_blocks))
        self.touched.difference_update(free)
        runs: list[tuple[int, int]] = []
        for block in free:
            if runs and runs[-1][1] == block:
                runs[-1] = (runs[-1][0], block + 1)
            else:
                runs.append((block, block + 1))
        return runs

    def free(self, seq: Sequence) -> None:
        self.free_blocks.extend(seq.block_table)
        seq.block_table = []
        seq.num_cached_tokens = 0


def slot(block_table: list[int], block_size: int, position: int) -> int:
    """The cache slot of a sequence's token at `position`."""
    return block_table[position // block_size] * block_size + position % block_size
