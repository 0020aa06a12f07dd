"""Llama-family forward pass over a paged KV cache, reusing the HF model's own modules.

The HF modules (projections, norms, MLP) do the arithmetic, so `quantize_dynamic` on
them applies here too; only attention and the cache are ours. One flat token batch:
prefill rows are packed prompts, decode rows are one token per sequence.

A vision-language model's text decoder runs here too (engine/models/vision/): its body, head and text
config as a `TextDecoder`, its rotary positions from the family (M-RoPE takes [3, n] positions), and a
prefill's input embeddings with the media spliced in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel

from engine.llm.kv_cache import KVCache
from engine.models.lora import LoRABatch, lora_mlp, lora_project
from engine.models.vision.family import RotaryEmbedding

if TYPE_CHECKING:
    from engine.models.kernel_decoder import KernelDecoder


@dataclass
class AttentionMetadata:
    """How the flat batch's tokens map onto sequences and cache slots."""

    is_prefill: bool
    write_slots: torch.Tensor  # [num_tokens] where each token's K/V goes
    # prefill: each sequence's prompt length, in packing order (attention runs per sequence)
    prefill_lengths: list[int] | None = None
    # decode: the cache slots each sequence attends to, padded, and which of them are real
    context_slots: torch.Tensor | None = None  # [batch, max_context]
    context_mask: torch.Tensor | None = None  # [batch, 1, 1, max_context] bool
    lora: LoRABatch | None = None  # rows that run with a LoRA adapter (engine/models/lora.py); None: none


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class TextDecoder:
    """A decoder's parts as the paged forward reads them, named as a causal LM names them (so a
    LlamaForCausalLM is one): `model` is the body (embed_tokens, layers, norm)."""

    model: torch.nn.Module
    lm_head: torch.nn.Module
    config: PretrainedConfig


class LlamaRotary:
    """Llama's default RoPE: one table of cos/sin rows by position, looked up per step ([n] positions)."""

    def __init__(self, config: PretrainedConfig, max_positions: int, device: torch.device,
                 dtype: torch.dtype) -> None:  # fmt: skip
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        rope = getattr(config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type {rope['rope_type']!r} is not supported by the paged runner")
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        )
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32, device=device), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


class PagedLlama:
    def __init__(self, model: PreTrainedModel | TextDecoder, max_positions: int,
                 rotary: RotaryEmbedding | None = None) -> None:  # fmt: skip
        """`model`: a Llama-family causal LM, or a VLM's TextDecoder; `rotary`: the positions' cos/sin
        (None: Llama's default RoPE for up to `max_positions` positions)."""
        config = model.config
        self.model = model
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.vocab_size = config.vocab_size
        parameter = next(model.model.parameters())
        self.rotary = rotary or LlamaRotary(config, max_positions, parameter.device, parameter.dtype)
        self.scale = self.head_dim**-0.5
        # --quantize q4: decode steps without LoRA rows run here instead (engine/models/kernel_decoder.py)
        self.kernel_decoder: KernelDecoder | None = None

    def _attention(self, layer_idx: int, attn_module: torch.nn.Module, x: torch.Tensor,
                   rope: tuple[torch.Tensor, torch.Tensor], meta: AttentionMetadata,
                   cache: KVCache) -> torch.Tensor:  # fmt: skip
        n = x.shape[0]
        q = lora_project(attn_module.q_proj, x, meta.lora, layer_idx, "q_proj").view(n, self.num_heads, -1)
        k = lora_project(attn_module.k_proj, x, meta.lora, layer_idx, "k_proj").view(n, self.num_kv_heads, -1)
        v = lora_project(attn_module.v_proj, x, meta.lora, layer_idx, "v_proj").view(n, self.num_kv_heads, -1)
        cos, sin = rope
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        cache.k[layer_idx].index_copy_(0, meta.write_slots, k)
        cache.v[layer_idx].index_copy_(0, meta.write_slots, v)

        if meta.is_prefill:
            assert meta.prefill_lengths is not None
            outs = []
            for q_s, k_s, v_s in zip(
                q.split(meta.prefill_lengths),
                k.split(meta.prefill_lengths),
                v.split(meta.prefill_lengths),
                strict=True,
            ):
                o = F.scaled_dot_product_attention(
                    q_s.transpose(0, 1).unsqueeze(0), k_s.transpose(0, 1).unsqueeze(0),
                    v_s.transpose(0, 1).unsqueeze(0), is_causal=True, scale=self.scale, enable_gqa=True,
                )  # fmt: skip
                outs.append(o.squeeze(0).transpose(0, 1))
            out = torch.cat(outs, dim=0)
        else:
            assert meta.context_slots is not None and meta.context_mask is not None
            ctx_k = cache.k[layer_idx][meta.context_slots].transpose(1, 2)  # [B, kv_heads, T, D]
            ctx_v = cache.v[layer_idx][meta.context_slots].transpose(1, 2)
            out = F.scaled_dot_product_attention(
                q.unsqueeze(2), ctx_k, ctx_v, attn_mask=meta.context_mask, scale=self.scale, enable_gqa=True
            ).squeeze(2)
        out = out.reshape(n, self.num_heads * self.head_dim)
        return lora_project(attn_module.o_proj, out, meta.lora, layer_idx, "o_proj")

    def _layers(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                cache: KVCache, inputs_embeds: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        body = self.model.model
        h = body.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        rope = self.rotary.cos_sin(positions)  # once, not per layer
        for i, layer in enumerate(body.layers):
            h = h + self._attention(i, layer.self_attn, layer.input_layernorm(h), rope, meta, cache)
            h = h + lora_mlp(layer.mlp, layer.post_attention_layernorm(h), meta.lora, i)
        return h

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                cache: KVCache, logits_rows: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Run the flat batch; return logits (fp32) only for the rows in `logits_rows`. `positions`: [n]
        (or [3, n] for M-RoPE); `inputs_embeds`: every row's input embedding (a prefill with media), in
        place of the token embeddings."""
        kernels = self.kernel_decoder
        if kernels is not None and not meta.is_prefill and meta.lora is None and inputs_embeds is None:
            assert meta.context_slots is not None and meta.context_mask is not None
            return kernels.forward(input_ids, positions, meta.write_slots, meta.context_slots, meta.context_mask,
                                   cache.k, cache.v, logits_rows)  # fmt: skip
        h = self._layers(input_ids, positions, meta, cache, inputs_embeds)[logits_rows]
        return self.model.lm_head(self.model.model.norm(h)).float()

    @torch.inference_mode()
    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                      cache: KVCache, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Run the flat batch; return every row's final (normed) hidden state, for `logits` to read any
        row of (a prefill that also scores its prompt tokens)."""
        return self.model.model.norm(self._layers(input_ids, positions, meta, cache, inputs_embeds))

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden).float()

    @torch.inference_mode()
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token embeddings of a flat batch (for media to be spliced into)."""
        return self.model.model.embed_tokens(input_ids)
