"""Typed wrappers over the compiled CPU decode kernels: torch tensors in, the library's pointers out.

Every tensor handed over must be contiguous fp32 (or the stated integer type) on the CPU; the wrappers
allocate outputs and check shapes, so a mistake is an exception here, not a wild write in C.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

Q4_GROUP = 32  # inputs per scale (and low): GGUF's Q4_0/Q4_1/Q8_0 block

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SIGNATURES: dict[str, list[type]] = {
    "rt_q4_linear": [_P, _P, _P, _P, _P, _P, _I, _I, _I, ctypes.c_int],
    "rt_q8_linear": [_P, _P, _P, _P, _I, _I, _I, ctypes.c_int],
    "rt_add_rms_norm": [_P, _P, _P, _F, _P, _I, _I],
    "rt_rope_store": [_P, _I, _I, _I, _I, _P, _P, _P, _P, _P],
    "rt_decode_attention": [_P, _I, _P, _P, _P, _P, _I, _I, _I, _I, _I, _F, _P, ctypes.c_int],
    "rt_silu_mul": [_P, _P, _I, _I, ctypes.c_int],
}


def _ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    if not t.is_contiguous():
        raise ValueError("kernel tensors must be contiguous")
    return t.data_ptr()


@dataclass(frozen=True)
class Q4Weight:
    """A Linear's weight as Q4_1 groups (see cpu_decode.cpp): w = code * scale + low."""

    codes: torch.Tensor  # uint8 [N, K / 32, 16]
    scale: torch.Tensor  # fp32 [N, K / 32]
    low: torch.Tensor  # fp32 [N, K / 32]
    bias: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape[0], self.codes.shape[1] * Q4_GROUP

    @staticmethod
    def from_weight(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Q4Weight:
        """Quantize [N, K] with each group's min and max as its ends; a Q4_1-dequantized weight (every
        group 16 evenly spaced values) comes back as its own codes."""
        out_features, in_features = weight.shape
        if in_features % Q4_GROUP:
            raise ValueError(f"q4 needs in_features divisible by {Q4_GROUP}, got {in_features}")
        groups = weight.detach().float().reshape(out_features, in_features // Q4_GROUP, Q4_GROUP)
        low = groups.amin(-1)
        scale = (groups.amax(-1) - low).clamp(min=1e-10) / 15
        codes = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
        packed = codes[..., :16] | (codes[..., 16:] << 4)
        bias = None if bias is None else bias.detach().float().contiguous()
        return Q4Weight(packed.contiguous(), scale.contiguous(), low.contiguous(), bias)

    def codes_by_input(self) -> torch.Tensor:
        """The 4-bit codes unpacked, uint8 [N, K / 32, 32] in input order."""
        return torch.cat([self.codes & 15, self.codes >> 4], -1)

    def dequantize(self) -> torch.Tensor:
        codes = self.codes_by_input().float()
        return (codes * self.scale[..., None] + self.low[..., None]).reshape(self.shape)


@dataclass(frozen=True)
class Q8Weight:
    """A Linear's weight as Q8_0 groups (symmetric int8, one scale per 32 inputs): w = code * scale."""

    codes: torch.Tensor  # int8 [N, K]
    scale: torch.Tensor  # fp32 [N, K / 32]

    @staticmethod
    def from_weight(weight: torch.Tensor) -> Q8Weight:
        """Each group's largest magnitude becomes code 127; a Q8_0-dequantized weight comes back exactly."""
        out_features, in_features = weight.shape
        if in_features % Q4_GROUP:
            raise ValueError(f"q8 needs in_features divisible by {Q4_GROUP}, got {in_features}")
        groups = weight.detach().float().reshape(out_features, in_features // Q4_GROUP, Q4_GROUP)
        scale = groups.abs().amax(-1).clamp(min=1e-10) / 127
        codes = (groups / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
        return Q8Weight(codes.reshape(out_features, in_features).contiguous(), scale.contiguous())

    def dequantize(self) -> torch.Tensor:
        groups = self.codes.reshape(*self.scale.shape, Q4_GROUP).float() * self.scale[..., None]
        return groups.reshape(self.codes.shape)


class CpuDecodeKernels:
    """The library's functions as tensor operations; `threads` is the OpenMP team each call uses."""

    def __init__(self, library: ctypes.CDLL, threads: int) -> None:
        self._lib = library
        self.threads = threads
        for name, argtypes in _SIGNATURES.items():
            getattr(library, name).argtypes = argtypes
            getattr(library, name).restype = None

    def q4_linear(self, x: torch.Tensor, weight: Q4Weight) -> torch.Tensor:
        n, k = weight.shape
        rows = x.shape[0]
        if x.shape != (rows, k) or x.dtype != torch.float32:
            raise ValueError(f"q4_linear expects fp32 [M, {k}], got {tuple(x.shape)} {x.dtype}")
        y = torch.empty(rows, n)
        self._lib.rt_q4_linear(_ptr(weight.codes), _ptr(weight.scale), _ptr(weight.low), _ptr(weight.bias),
                               _ptr(x), _ptr(y), rows, n, k, self.threads)  # fmt: skip
        return y

    def q8_linear(self, x: torch.Tensor, weight: Q8Weight) -> torch.Tensor:
        n, k = weight.codes.shape
        rows = x.shape[0]
        if x.shape != (rows, k) or x.dtype != torch.float32:
            raise ValueError(f"q8_linear expects fp32 [M, {k}], got {tuple(x.shape)} {x.dtype}")
        y = torch.empty(rows, n)
        self._lib.rt_q8_linear(
            _ptr(weight.codes), _ptr(weight.scale), _ptr(x), _ptr(y), rows, n, k, self.threads
        )
        return y

    def add_rms_norm(self, h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> torch.Tensor:  # fmt: skip
        """h += delta in place (when given); return rms_norm(h) * weight."""
        out = torch.empty_like(h)
        if delta is not None and delta.shape != h.shape:
            raise ValueError("add_rms_norm: delta and h differ in shape")
        self._lib.rt_add_rms_norm(_ptr(h), _ptr(delta), _ptr(weight), eps, _ptr(out), h.shape[0], h.shape[1])
        return out

    def rope_store(self, qkv: torch.Tensor, heads: int, kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
                   slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:  # fmt: skip
        """Rotate qkv's q and k heads in place; write k and v to the cache rows `slots`."""
        rows, head_dim = qkv.shape[0], k_cache.shape[-1]
        if qkv.shape[1] != (heads + 2 * kv_heads) * head_dim or cos.shape != (rows, head_dim):
            raise ValueError("rope_store: qkv or cos/sin shape does not match the heads")
        if slots.dtype != torch.int64 or slots.shape != (rows,):
            raise ValueError("rope_store: slots must be int64 [M]")
        self._lib.rt_rope_store(_ptr(qkv), rows, heads, kv_heads, head_dim, _ptr(cos), _ptr(sin), _ptr(slots),
                                _ptr(k_cache), _ptr(v_cache))  # fmt: skip

    def decode_attention(self, qkv: torch.Tensor, heads: int, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         context_slots: torch.Tensor, context_mask: torch.Tensor,
                         scale: float) -> torch.Tensor:  # fmt: skip
        """Each row's q heads (the start of its qkv row) against its context; [B, heads * head_dim]."""
        batch, context = context_slots.shape
        kv_heads, head_dim = k_cache.shape[-2:]
        if context_mask.shape != (batch, context) or context_mask.dtype != torch.bool:
            raise ValueError("decode_attention: context_mask must be bool [B, T]")
        if context_slots.dtype != torch.int64 or qkv.shape[0] != batch:
            raise ValueError("decode_attention: context_slots must be int64 [B, T], one per qkv row")
        out = torch.empty(batch, heads * head_dim)
        self._lib.rt_decode_attention(_ptr(qkv), qkv.shape[1], _ptr(k_cache), _ptr(v_cache), _ptr(context_slots),
                                      _ptr(context_mask), batch, context, heads, kv_heads, head_dim, scale,
                                      _ptr(out), self.threads)  # fmt: skip
        return out

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        rows, width = gate_up.shape
        out = torch.empty(rows, width // 2)
        self._lib.rt_silu_mul(_ptr(gate_up), _ptr(out), rows, width // 2, self.threads)
        return out
