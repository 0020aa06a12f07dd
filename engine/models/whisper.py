"""Whisper's forward pass: the encoder, one decoder pass with self/cross KV caches, the vocabulary head.

It runs on the weights of transformers' WhisperForConditionalGeneration but through the few lines
below rather than its forward(): HF's encoder insists on 3000 mel frames (trimmed context needs
fewer), and its generic cache has per-step overhead we do not need. Batching, caches' bookkeeping and
decoding rules live in engine/asr/; this file only computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration

KVList = list[torch.Tensor]  # one tensor per decoder layer: [B, H, positions, head_dim]


@dataclass
class _DecoderLayer:
    ln1: torch.nn.LayerNorm
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    out1: torch.nn.Linear
    ln2: torch.nn.LayerNorm
    cross_q: torch.nn.Linear
    cross_kv_w: torch.Tensor
    cross_kv_b: torch.Tensor
    out2: torch.nn.Linear
    ln3: torch.nn.LayerNorm
    fc1: torch.nn.Linear
    fc2: torch.nn.Linear


def _fused(*linears: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat(
        [lin.bias if lin.bias is not None else torch.zeros_like(lin.weight[:, 0]) for lin in linears]
    )
    return weight, bias


class WhisperModel:
    def __init__(self, model: WhisperForConditionalGeneration, device: str | torch.device) -> None:
        self.device = torch.device(device)
        model = model.to(self.device).eval()
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        head = model.proj_out
        # fp32 on a CPU: a transposed copy, since MKL reads [d, V] about twice as fast as W.T at small
        # batches; otherwise (a GPU, or the int8 head of --asr-quantize) the module is called as it is.
        fp32_cpu = isinstance(head, torch.nn.Linear) and self.device.type == "cpu"
        self._head_t = head.weight.detach().T.contiguous() if fp32_cpu else None
        self._head = head
        cfg = model.config
        self.d_model = cfg.d_model
        self.enc_heads = cfg.encoder_attention_heads
        self.dec_heads = cfg.decoder_attention_heads
        self.max_positions = cfg.max_target_positions
        self.max_source_positions = cfg.max_source_positions
        # conv1 stride 1, conv2 stride 2: two mel frames per encoder position.
        self.frames_per_position = self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0]
        self.enc_qkv = [
            _fused(lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj)
            for lay in self.encoder.layers
        ]
        self.dec_layers = [self._decoder_layer(lay) for lay in self.decoder.layers]

    @staticmethod
    def _decoder_layer(lay: torch.nn.Module) -> _DecoderLayer:
        qkv_w, qkv_b = _fused(lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj)
        kv_w, kv_b = _fused(lay.encoder_attn.k_proj, lay.encoder_attn.v_proj)
        return _DecoderLayer(
            lay.self_attn_layer_norm, qkv_w, qkv_b, lay.self_attn.out_proj,
            lay.encoder_attn_layer_norm, lay.encoder_attn.q_proj, kv_w, kv_b, lay.encoder_attn.out_proj,
            lay.final_layer_norm, lay.fc1, lay.fc2,
        )  # fmt: skip

    @property
    def num_layers(self) -> int:
        return len(self.dec_layers)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.dec_heads

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, 2T] log-mel -> [B, T, d] encoder states, for any T <= 1500."""
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        batch, positions, _ = x.shape
        x = x + enc.embed_positions.weight[:positions]
        heads, head_dim = self.enc_heads, self.d_model // self.enc_heads
        for layer, (qkv_w, qkv_b) in zip(enc.layers, self.enc_qkv, strict=True):
            h = layer.self_attn_layer_norm(x)
            q, k, v = (
                F.linear(h, qkv_w, qkv_b).view(batch, positions, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            )
            a = F.scaled_dot_product_attention(q, k, v)
            x = x + layer.self_attn.out_proj(a.transpose(1, 2).reshape(batch, positions, self.d_model))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return enc.layer_norm(x)

    def cross_kv(self, states: torch.Tensor) -> tuple[KVList, KVList]:
        """Every decoder layer's cross-attention keys and values for [B, T, d] encoder states."""
        batch, positions, _ = states.shape
        heads, head_dim = self.dec_heads, self.head_dim
        keys, values = [], []
        for layer in self.dec_layers:
            kv = F.linear(states, layer.cross_kv_w, layer.cross_kv_b)
            k, v = kv.view(batch, positions, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
            keys.append(k.contiguous())
            values.append(v.contiguous())
        return keys, values

    def decode(
        self,
        tokens: torch.Tensor,  # [B, S]
        positions: torch.Tensor,  # [B, S]
        mask: torch.Tensor,  # [B, 1, S, length + S] bool, True = may attend
        self_k: KVList,
        self_v: KVList,
        start: int,  # cache column of tokens[:, 0]
        cross_k: KVList,
        cross_v: KVList,
        cross_mask: torch.Tensor | None = None,  # [B, 1, 1, T_enc] bool
    ) -> torch.Tensor:
        """Run the decoder on S new tokens per row, writing their keys/values into the caches.

        Returns the final hidden state of every new token: [B, S, d].
        """
        batch, steps = tokens.shape
        heads, head_dim = self.dec_heads, self.head_dim
        end = start + steps
        x = self.decoder.embed_tokens(tokens) + self.decoder.embed_positions.weight[positions]
        for i, layer in enumerate(self.dec_layers):
            h = layer.ln1(x)
            q, k, v = (
                F.linear(h, layer.qkv_w, layer.qkv_b)
                .view(batch, steps, 3, heads, head_dim)
                .permute(2, 0, 3, 1, 4)
            )
            self_k[i][:, :, start:end] = k
            self_v[i][:, :, start:end] = v
            a = F.scaled_dot_product_attention(
                q, self_k[i][:, :, :end], self_v[i][:, :, :end], attn_mask=mask
            )
            x = x + layer.out1(a.transpose(1, 2).reshape(batch, steps, self.d_model))
            h = layer.ln2(x)
            q = layer.cross_q(h).view(batch, steps, heads, head_dim).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], attn_mask=cross_mask)
            x = x + layer.out2(a.transpose(1, 2).reshape(batch, steps, self.d_model))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.ln3(x))))
        return self.decoder.layer_norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., d] decoder states -> [..., V] vocabulary logits."""
        if self._head_t is not None:
            return hidden @ self._head_t
        return self._head(hidden)

    def new_cache(self, batch: int, capacity: int) -> tuple[KVList, KVList]:
        """Zeroed self-attention keys and values for `batch` rows of `capacity` positions."""
        shape = (batch, self.dec_heads, capacity, self.head_dim)
        keys = [torch.zeros(shape, device=self.device) for _ in range(self.num_layers)]
        values = [torch.zeros(shape, device=self.device) for _ in range(self.num_layers)]
        return keys, values
