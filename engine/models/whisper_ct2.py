"""CTranslate2 Whisper variables -> a transformers WhisperForConditionalGeneration state dict.

This inverts ctranslate2's WhisperLoader: names are mapped back, fused projections split, int8/int16
weights dequantized. The shapes found give the WhisperConfig.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from engine.models.ct2_reader import CT2Model

ENC, DEC = "model.encoder", "model.decoder"


def _dequantized(model: CT2Model, name: str) -> np.ndarray:
    value = model.variables[name]
    scale = model.variables.get(name + "_scale")
    if value.dtype == np.int8 and scale is not None:
        # CT2 int8: weight = round(w * scale) per output row.
        return value.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (value.ndim - 1)))
    if value.dtype == np.int16 and scale is not None:
        return value.astype(np.float32) / float(scale)
    return value.astype(np.float32)


def _count_layers(names: list[str], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for n in names if (m := pattern.match(n))), default=-1)


def _scalar(model: CT2Model, name: str, default: int) -> int:
    value = model.variables.get(name)
    return int(value) if value is not None and value.ndim == 0 else default


class _StateDict:
    """Fills an HF state dict from CT2 variables, one module at a time."""

    def __init__(self, ct2: CT2Model) -> None:
        self.ct2 = ct2
        self.sd: dict[str, torch.Tensor] = {}

    def t(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(_dequantized(self.ct2, name)))

    def linear(self, hf: str, ct: str) -> None:
        self.sd[f"{hf}.weight"] = self.t(f"{ct}/weight")
        if f"{ct}/bias" in self.ct2.variables:
            self.sd[f"{hf}.bias"] = self.t(f"{ct}/bias")

    def layer_norm(self, hf: str, ct: str) -> None:
        self.sd[f"{hf}.weight"] = self.t(f"{ct}/gamma")
        self.sd[f"{hf}.bias"] = self.t(f"{ct}/beta")

    def split_attention(self, hf: str, ct: str, fused: str, parts: tuple[str, ...]) -> None:
        # CT2 fuses [q; k; v] (self-attention) or [k; v] (cross-attention); k_proj has no bias in HF.
        weight = self.t(f"{ct}/{fused}/weight")
        bias = self.t(f"{ct}/{fused}/bias") if f"{ct}/{fused}/bias" in self.ct2.variables else None
        for i, (w, part) in enumerate(zip(weight.chunk(len(parts)), parts, strict=True)):
            self.sd[f"{hf}.{part}_proj.weight"] = w.contiguous()
            if bias is not None and part != "k":
                self.sd[f"{hf}.{part}_proj.bias"] = bias.chunk(len(parts))[i].contiguous()

    def self_attention_and_ffn(self, hf: str, ct: str) -> None:
        self.split_attention(f"{hf}.self_attn", f"{ct}/self_attention", "linear_0", ("q", "k", "v"))
        self.linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        self.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        self.linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        self.linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        self.layer_norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    def encoder(self, layers: int) -> None:
        for conv in ("conv1", "conv2"):
            self.sd[f"{ENC}.{conv}.weight"] = self.t(f"encoder/{conv}/weight")
            self.sd[f"{ENC}.{conv}.bias"] = self.t(f"encoder/{conv}/bias")
        self.sd[f"{ENC}.embed_positions.weight"] = self.t("encoder/position_encodings/encodings")
        self.layer_norm(f"{ENC}.layer_norm", "encoder/layer_norm")
        for i in range(layers):
            self.self_attention_and_ffn(f"{ENC}.layers.{i}", f"encoder/layer_{i}")

    def decoder(self, layers: int) -> None:
        self.sd[f"{DEC}.embed_tokens.weight"] = self.t("decoder/embeddings/weight")
        self.sd[f"{DEC}.embed_positions.weight"] = self.t("decoder/position_encodings/encodings")
        self.layer_norm(f"{DEC}.layer_norm", "decoder/layer_norm")
        for i in range(layers):
            hf, ct = f"{DEC}.layers.{i}", f"decoder/layer_{i}"
            self.self_attention_and_ffn(hf, ct)
            self.linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
            self.split_attention(f"{hf}.encoder_attn", f"{ct}/attention", "linear_1", ("k", "v"))
            self.linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
            self.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        projection = "decoder/projection/weight"
        variables = self.ct2.variables
        if projection in variables and not np.array_equal(
            variables[projection], variables["decoder/embeddings/weight"]
        ):
            self.sd["proj_out.weight"] = self.t(projection)


def ct2_to_state_dict(ct2: CT2Model) -> tuple[dict[str, torch.Tensor], dict]:
    """Invert ctranslate2's WhisperLoader: CT2 variables -> (HF state dict, WhisperConfig kwargs)."""
    names = list(ct2.variables)
    num_enc, num_dec = _count_layers(names, "encoder"), _count_layers(names, "decoder")
    builder = _StateDict(ct2)
    builder.encoder(num_enc)
    builder.decoder(num_dec)
    sd = builder.sd
    vocab_size, d_model = sd[f"{DEC}.embed_tokens.weight"].shape
    shapes = dict(
        vocab_size=vocab_size,
        num_mel_bins=sd[f"{ENC}.conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=num_enc,
        decoder_layers=num_dec,
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads", d_model // 64),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads", d_model // 64),
        encoder_ffn_dim=sd[f"{ENC}.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd[f"{DEC}.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd[f"{ENC}.embed_positions.weight"].shape[0],
        max_target_positions=sd[f"{DEC}.embed_positions.weight"].shape[0],
        tie_word_embeddings="proj_out.weight" not in sd,
    )
    return sd, shapes
