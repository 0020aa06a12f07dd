"""Optional int8 dynamic quantization of Linear layers: a CPU speed lever.

Weights are int8 per output channel; activations are quantized per batch on the fly.

LLM: the attention output and MLP down projections stay fp32, since their inputs carry large
activation outliers. Measured on SmolLM2-135M (a 60-token passage): fp32 perplexity 8.09; every
Linear int8 21.7; all but down_proj 9.03; all but down_proj and o_proj 7.94 (this choice).

Whisper: the encoder's MLP and attention output (most of its FLOPs), and the vocabulary projection
(proj_out), which every decoder step reads whole: at small batches it is most of a step, bound by
memory, and int8 reads a quarter of the bytes (tiny.en, one row: 5.7 ms fp32, 0.3 ms int8). The
encoder's q/k/v are fused into one matrix by the runner; the decoder layers are too small to gain.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from engine.kernels.ops import Q4_GROUP, Q4Weight

LLM_KEEP_FP32 = ("down_proj", "o_proj", "lm_head")
WHISPER_ENCODER_INT8 = ("fc1", "fc2", "out_proj")
WHISPER_HEAD = "proj_out"


def _quantize(model: nn.Module, names: set[str]) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's migration notice; the API still works
        return quantize_dynamic(
            model, {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8, inplace=True
        )


def quantize_llm_int8(model: nn.Module) -> nn.Module:
    names = {
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith(LLM_KEEP_FP32)
    }  # fmt: skip
    return _quantize(model, names)


def quantize_whisper_int8(model: nn.Module) -> nn.Module:
    names = {
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".encoder." in f".{name}" and name.endswith(WHISPER_ENCODER_INT8)
    }  # fmt: skip
    return _quantize(model, names | {WHISPER_HEAD})


# ---- weight-only formats: bf16 activations through torch's packed int4/int8 CPU kernels ----

WEIGHT_ONLY_FORMATS = ("int4", "int8w")


class Int4Linear(nn.Module):
    """y = x W^T with W stored as 4-bit codes, a bf16 scale and zero per group of Q4_GROUP inputs."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        q4 = Q4Weight.from_weight(linear.weight)  # the same groups as the q4 decode kernels
        out_features, in_features = q4.shape
        codes = q4.codes_by_input().reshape(out_features, in_features)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 2)
        # the kernel computes (code - 8) * scale + zero
        scale, low = q4.scale[..., None], q4.low[..., None]
        zero = low + 8 * scale
        self.scales_and_zeros = torch.cat([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.out_features = out_features
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, Q4_GROUP, self.scales_and_zeros)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Int8WeightLinear(nn.Module):
    """y = x W^T with W stored int8 per output channel (symmetric), bf16 activations."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(1).clamp(min=1e-10) / 127
        self.weight_int8 = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(torch.bfloat16)
        self.out_features = weight.shape[0]
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(rows, self.weight_int8, self.scale)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias


def quantize_llm_weight_only(model: nn.Module, fmt: str) -> nn.Module:
    """Swap the decoder's Linear layers (and lm_head) for weight-only int4/int8 ones, in place.

    int4: decoder projections as 4-bit groups of 32 (for a model shipped as GGUF Q4_0/Q4_1, its own codes),
    lm_head as int8 per channel (the embedding lookup keeps its fp32 table). int8w: every Linear int8."""
    if fmt not in WEIGHT_ONLY_FORMATS:
        raise ValueError(f"unknown weight-only format {fmt!r}")
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            is_head = child is getattr(model, "lm_head", None)
            use_int4 = fmt == "int4" and not is_head and child.in_features % Q4_GROUP == 0
            setattr(parent, child_name, Int4Linear(child) if use_int4 else Int8WeightLinear(child))
    return model


def torch_weight_format(requested: str) -> str:
    """The format the torch modules keep: q4 and auto keep them fp32 (prefill runs there; decode steps may
    run through engine/models/kernel_decoder.py, which holds its own 4-bit copy)."""
    return "none" if requested in ("q4", "auto") else requested
