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
