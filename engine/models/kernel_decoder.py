"""A Llama-family decode step through the native CPU kernels (engine/kernels/): 4-bit decoder weights.

A decode step is a few rows against the whole model. Through torch it costs ~90 dispatched ops per
layer, and the weights' bytes; here a layer is eight kernel calls and its projections are read as
Q4_1 groups (q/k/v fused into one matrix, gate/up into another), with the lm_head as int8 rows.
Activations, norms, attention and accumulation stay fp32. For a model shipped as GGUF Q4_0/Q4_1 the
groups are its own codes, so the weights are the shipped ones; the fp32 arithmetic differs from the
torch path only in summation order.

Prefill steps, LoRA rows and M-RoPE stay on PagedLlama's torch path, which shares the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.kernels.ops import CpuDecodeKernels, Q4Weight, Q8Weight

# Decoder blocks with exactly Llama's layout: RMSNorm, RoPE'd attention without q/k norms, a SiLU MLP.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _fused(linears: list[nn.Linear]) -> tuple[Q4Weight, bool]:
    """The linears stacked into one q4 matrix, and whether its groups reproduce every weight exactly."""
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    bias = None
    if any(linear.bias is not None for linear in linears):
        bias = torch.cat([
            linear.bias.detach().float() if linear.bias is not None else torch.zeros(linear.out_features)
            for linear in linears
        ])  # fmt: skip
    fused = Q4Weight.from_weight(weight, bias)
    return fused, torch.equal(fused.dequantize(), weight)


def _norm_weight(norm: nn.Module) -> torch.Tensor:
    return norm.weight.detach().float().contiguous()


@dataclass(frozen=True)
class KernelLayer:
    input_norm: torch.Tensor  # fp32 [hidden]
    post_norm: torch.Tensor
    qkv: Q4Weight  # [(heads + 2 kv_heads) * head_dim, hidden]
    o: Q4Weight
    gate_up: Q4Weight  # [2 * intermediate, hidden]
    down: Q4Weight
    exact: bool  # the q4 groups reproduce every projection weight bit for bit

    @staticmethod
    def from_hf(layer: nn.Module) -> KernelLayer:
        attn, mlp = layer.self_attn, layer.mlp
        groups = (
            [attn.q_proj, attn.k_proj, attn.v_proj],
            [attn.o_proj],
            [mlp.gate_proj, mlp.up_proj],
            [mlp.down_proj],
        )
        (qkv, o, gate_up, down), exact = zip(*(_fused(group) for group in groups), strict=True)
        return KernelLayer(
            _norm_weight(layer.input_layernorm), _norm_weight(layer.post_attention_layernorm),
            qkv, o, gate_up, down, all(exact),
        )  # fmt: skip


def kernel_decoding_supported(model: nn.Module) -> str | None:
    """Why `model` (a causal LM, fp32 nn.Linear projections) cannot decode through the kernels; None if it can."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {config.model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    layer = model.model.layers[0]
    if not isinstance(layer.self_attn.q_proj, nn.Linear) or hasattr(layer.self_attn, "q_norm"):
        return "its attention is not plain Linear projections"
    if next(model.parameters()).dtype != torch.float32:
        return "its weights are not fp32"
    if any(linear.in_features % 32 for linear in (layer.self_attn.q_proj, layer.mlp.down_proj)):
        return "its hidden or intermediate size is not a multiple of 32"
    return None


class KernelDecoder:
    """Decode steps (one token per sequence, no LoRA) for a Llama-family model; fp32 logits."""

    def __init__(
        self, model: nn.Module, cos: torch.Tensor, sin: torch.Tensor, kernels: CpuDecodeKernels
    ) -> None:
        """`model`: the fp32 causal LM (read once, not kept); `cos`/`sin`: the rotary table [positions, head_dim]."""
        config = model.config
        self.kernels = kernels
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        self.embed = model.model.embed_tokens
        self.layers = [KernelLayer.from_hf(layer) for layer in model.model.layers]
        self.final_norm = _norm_weight(model.model.norm)
        self.lm_head = Q8Weight.from_weight(model.lm_head.weight)
        self.cos, self.sin = cos.float().contiguous(), sin.float().contiguous()
        # True when every weight came back exactly (a model shipped as GGUF Q4_1 with a Q8_0 head): then the
        # kernels compute with the model's own weights, and only the summation order differs from fp32.
        head_exact = torch.equal(self.lm_head.dequantize(), model.lm_head.weight.float())
        self.exact = head_exact and all(layer.exact for layer in self.layers)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, write_slots: torch.Tensor,
                context_slots: torch.Tensor, context_mask: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, logits_rows: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """One token per row; writes each layer's K/V at `write_slots`; logits for `logits_rows`."""
        ops = self.kernels
        cos, sin = self.cos[positions], self.sin[positions]
        slots, context = write_slots.contiguous(), context_slots.contiguous()
        mask = context_mask.reshape(context.shape).contiguous()
        h = self.embed(input_ids).float().contiguous()
        x = ops.add_rms_norm(h, None, self.layers[0].input_norm, self.eps)
        for i, layer in enumerate(self.layers):
            qkv = ops.q4_linear(x, layer.qkv)
            ops.rope_store(qkv, self.heads, self.kv_heads, cos, sin, slots, k_cache[i], v_cache[i])
            attn = ops.decode_attention(qkv, self.heads, k_cache[i], v_cache[i], context, mask, self.scale)
            x = ops.add_rms_norm(h, ops.q4_linear(attn, layer.o), layer.post_norm, self.eps)
            mlp = ops.q4_linear(ops.silu_mul(ops.q4_linear(x, layer.gate_up)), layer.down)
            following = self.layers[i + 1].input_norm if i + 1 < len(self.layers) else self.final_norm
            x = ops.add_rms_norm(h, mlp, following, self.eps)
        return ops.q8_linear(x[logits_rows].contiguous(), self.lm_head)
