"""The pooling runner: a batch of token-id rows -> padded tensors -> one forward -> one float32 row each.

It only reads the batch it is given (scheduler.PoolingBatch) and returns plain numpy rows."""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.models.pooling import PoolingBundle
from engine.pooling.scheduler import PoolingBatch, PoolingResult


class PoolingRunner:
    def __init__(self, bundles: dict[str, PoolingBundle], device: str) -> None:
        self.bundles = bundles
        self.device = device

    def run(self, batch: PoolingBatch) -> PoolingResult:
        started = time.perf_counter()
        bundle = self.bundles[batch.model]
        ids, mask, types = self.pad(batch.token_ids, batch.type_ids, bundle.pad_token_id)
        out = bundle.forward(ids, mask, types)
        vectors = list(out.float().cpu().numpy())
        return PoolingResult(vectors, time.perf_counter() - started)

    def pad(
        self, rows: list[list[int]], type_rows: list[list[int] | None], pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Right-padded ids, the attention mask, and segment ids when any row has them."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if any(t for t in type_rows) else None
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            if types is not None and type_rows[i]:
                types[i, : len(row)] = type_rows[i]
        as_tensor = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        return as_tensor(ids), as_tensor(mask), as_tensor(types) if types is not None else None
