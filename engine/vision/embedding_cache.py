"""Media embeddings kept across requests, so a multi-turn chat about one picture encodes it once.

Keyed by (kind, content_hash): the same bytes make the same processed pixels under one server's processor,
hence the same embeddings. Bounded in bytes; the least recently used entries go first. Used on the inference
thread only (the runner's), so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from engine.vision.inputs import MediaKind

CacheKey = tuple[MediaKind, str]
DEFAULT_MAX_BYTES = 256 * 2**20


class EmbeddingCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[CacheKey, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, num_tokens: int) -> torch.Tensor | None:
        """The item's embeddings, if kept and of the expected length (else a miss)."""
        found = self._entries.get(key)
        if found is None or found.shape[0] != num_tokens:
            return None
        self._entries.move_to_end(key)
        return found

    def put(self, key: CacheKey, embeddings: torch.Tensor) -> None:
        size = _nbytes(embeddings)
        if size > self.max_bytes:
            return  # larger than the whole cache: not kept
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= _nbytes(old)
        while self._entries and self.nbytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= _nbytes(evicted)
        self._entries[key] = embeddings
        self.nbytes += size


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
