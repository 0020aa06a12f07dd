"""Optional int8 dynamic quantization of the LLM's Linear layers (a CPU speed lever)."""

from __future__ import annotations

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """Weights int8, activations quantized per batch on the fly; embeddings and norms stay fp32."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
