"""The native CPU decode kernels (engine/kernels/) against torch's own arithmetic, and the kernel decoder
(engine/models/kernel_decoder.py) against PagedLlama's torch path on tiny random Llama and Qwen2 models.
No timing here: see clients/bench_llm.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from engine.config import EngineConfig, default_cache_dir
from engine.kernels.build import DISABLE_ENV, load_cpu_kernels
from engine.kernels.ops import CpuDecodeKernels, Q4Weight, Q8Weight
from engine.llm.kv_cache import KVCache
from engine.llm.lane import kernel_decoder_for
from engine.models.kernel_decoder import KernelDecoder, kernel_decoding_supported
from engine.models.paged_llama import AttentionMetadata, PagedLlama

SLOTS_PER_SEQ = 64


@pytest.fixture(scope="module")
def ops() -> CpuDecodeKernels:
    library = load_cpu_kernels(default_cache_dir())
    assert library is not None, "the kernels must build where a C++ compiler is present"
    return CpuDecodeKernels(library, torch.get_num_threads())


@pytest.mark.parametrize("rows", [1, 3, 8, 11])
def test_q4_and_q8_linear_match_their_dequantized_weights(ops, rows):
    torch.manual_seed(rows)
    weight, bias, x = torch.randn(200, 96), torch.randn(200), torch.randn(rows, 96)
    q4 = Q4Weight.from_weight(weight, bias)
    error = (q4.dequantize() - weight).abs().reshape(200, 3, 32)
    assert (error <= q4.scale[..., None] * 0.5001).all()  # each value within half its group's step
    torch.testing.assert_close(ops.q4_linear(x, q4), F.linear(x, q4.dequantize(), bias), rtol=1e-5, atol=1e-4)
    q8 = Q8Weight.from_weight(weight)
    torch.testing.assert_close(ops.q8_linear(x, q8), x @ q8.dequantize().T, rtol=1e-5, atol=1e-4)
    shipped = as_gguf_q4_1(weight)  # a Q4_1 weight keeps its own codes
    assert torch.equal(Q4Weight.from_weight(shipped).dequantize(), shipped)
    assert torch.equal(Q4Weight.from_weight(shipped).codes, q4.codes)


def as_gguf_q4_1(weight: torch.Tensor) -> torch.Tensor:
    """What a GGUF Q4_1 file dequantizes to: codes times an fp16 scale, plus an fp16 low, per group."""
    q4 = Q4Weight.from_weight(weight)
    return Q4Weight(q4.codes, q4.scale.half().float(), q4.low.half().float(), None).dequantize()


def as_gguf_q8_0(weight: torch.Tensor) -> torch.Tensor:
    q8 = Q8Weight.from_weight(weight)
    return Q8Weight(q8.codes, q8.scale.half().float()).dequantize()


@pytest.mark.parametrize("march", ["haswell", "x86-64"])
def test_the_avx2_and_portable_branches_match_too(march):
    """CI's CPU may lack AVX-512 (or AVX2): the other branches of cpu_decode.cpp, built for those targets."""
    if march == "haswell" and "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU cannot run AVX2 code")
    library = load_cpu_kernels(default_cache_dir(), march)
    assert library is not None
    ops = CpuDecodeKernels(library, 2)
    torch.manual_seed(1)
    weight, bias = torch.randn(40, 96), torch.randn(40)
    q4, q8 = Q4Weight.from_weight(weight, bias), Q8Weight.from_weight(weight)
    for rows in (1, 9):
        x = torch.randn(rows, 96)
        torch.testing.assert_close(
            ops.q4_linear(x, q4), F.linear(x, q4.dequantize(), bias), rtol=1e-5, atol=1e-4
        )
        torch.testing.assert_close(ops.q8_linear(x, q8), x @ q8.dequantize().T, rtol=1e-5, atol=1e-4)


def test_norm_rope_attention_and_silu_match_torch(ops):
    torch.manual_seed(0)
    heads, kv_heads, dim, batch, context = 6, 2, 16, 3, 20
    h, delta, w = torch.randn(batch, 64), torch.randn(batch, 64), torch.randn(64)
    expected_h = h + delta
    out = ops.add_rms_norm(h, delta, w, 1e-5)
    torch.testing.assert_close(h, expected_h)
    torch.testing.assert_close(out, F.rms_norm(expected_h, (64,), w, 1e-5), rtol=1e-5, atol=1e-5)

    qkv = torch.randn(batch, (heads + 2 * kv_heads) * dim)
    angles = torch.rand(batch, dim // 2) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    k_cache, v_cache = torch.randn(100, kv_heads, dim), torch.randn(100, kv_heads, dim)
    slots = torch.tensor([5, 50, 99])
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], -1)

    def rotated(x: torch.Tensor) -> torch.Tensor:
        x = x.view(batch, -1, dim)
        half = torch.cat([-x[..., dim // 2 :], x[..., : dim // 2]], -1)
        return x * cos[:, None] + half * sin[:, None]

    q_ref, k_ref, v_ref = rotated(q), rotated(k), v.view(batch, kv_heads, dim).clone()
    ops.rope_store(qkv, heads, kv_heads, cos, sin, slots, k_cache, v_cache)
    torch.testing.assert_close(qkv[:, : heads * dim].view(batch, heads, dim), q_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_cache[slots], k_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(v_cache[slots], v_ref)

    context_slots = torch.randint(0, 100, (batch, context))
    mask = torch.rand(batch, context) < 0.7
    mask[:, 0] = True
    out = ops.decode_attention(qkv, heads, k_cache, v_cache, context_slots, mask, dim**-0.5)
    expected = F.scaled_dot_product_attention(
        q_ref.unsqueeze(2), k_cache[context_slots].transpose(1, 2), v_cache[context_slots].transpose(1, 2),
        attn_mask=mask[:, None, None, :], scale=dim**-0.5, enable_gqa=True,
    ).squeeze(2)  # fmt: skip
    torch.testing.assert_close(out.view(batch, heads, dim), expected, rtol=1e-5, atol=1e-5)

    gate_up = torch.randn(batch, 2 * 48)
    torch.testing.assert_close(ops.silu_mul(gate_up), F.silu(gate_up[:, :48]) * gate_up[:, 48:])


def test_kernel_ops_refuse_mismatched_tensors(ops):
    q4 = Q4Weight.from_weight(torch.randn(8, 64))
    with pytest.raises(ValueError, match="fp32"):
        ops.q4_linear(torch.randn(2, 32), q4)
    with pytest.raises(ValueError, match="contiguous"):
        ops.q4_linear(torch.randn(64, 2).T, q4)
    with pytest.raises(ValueError, match="divisible"):
        Q4Weight.from_weight(torch.randn(8, 40))


def tiny_model(kind: str) -> torch.nn.Module:
    """A random model of the real architecture, its weights as a GGUF Q4_1 file (Q8_0 lm_head) would give
    them, so the kernels and torch compute with the same numbers."""
    torch.manual_seed(7)
    shape = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    if kind == "qwen2":  # q/k/v biases
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=False))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True))
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name != "lm_head":
                module.weight.copy_(as_gguf_q4_1(module.weight))
        model.lm_head.weight.copy_(as_gguf_q8_0(model.lm_head.weight))
        for layer in model.model.layers:  # norms away from 1, so a wrong norm weight shows
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    return model.eval()


def decode_logits(paged: PagedLlama, prompts: list[list[int]], steps: int) -> list[torch.Tensor]:
    """Prefill `prompts` (torch path), then `steps` greedy decode steps; each step's logits [B, vocab]."""
    cache = KVCache.allocate(paged.num_layers, SLOTS_PER_SEQ * len(prompts) // 4, 4, paged.num_kv_heads,
                             paged.head_dim, torch.float32, "cpu")  # fmt: skip
    lengths = [len(p) for p in prompts]
    write = torch.cat([torch.arange(n) + b * SLOTS_PER_SEQ for b, n in enumerate(lengths)])
    meta = AttentionMetadata(True, write, prefill_lengths=lengths)
    ends = torch.tensor(lengths).cumsum(0) - 1
    ids = torch.tensor([t for p in prompts for t in p])
    positions = torch.cat([torch.arange(n) for n in lengths])
    tokens = paged.forward(ids, positions, meta, cache, ends).argmax(-1)
    out = []
    for _ in range(steps):
        positions = torch.tensor(lengths)
        width = int(positions.max()) + 1
        span = torch.arange(width)
        mask = span[None, :] <= positions[:, None]
        base = torch.arange(len(prompts))[:, None] * SLOTS_PER_SEQ
        context = torch.where(mask, base + span, torch.tensor(cache.padding_slot))
        meta = AttentionMetadata(False, (base[:, 0] + positions), context_slots=context,
                                 context_mask=mask[:, None, None, :])  # fmt: skip
        logits = paged.forward(tokens, positions, meta, cache, torch.arange(len(prompts)))
        out.append(logits)
        tokens = logits.argmax(-1)
        lengths = [n + 1 for n in lengths]
    return out


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_kernel_decoder_matches_the_torch_path(ops, kind):
    model = tiny_model(kind)
    assert kernel_decoding_supported(model) is None
    paged = PagedLlama(model, 256)
    prompts = [[(7 * b + 3 * i) % 300 for i in range(5 + 3 * b)] for b in range(10)]  # 10 rows: two blocks
    expected = decode_logits(paged, prompts, 6)
    paged.kernel_decoder = KernelDecoder(model, paged.rotary.cos, paged.rotary.sin, ops)
    assert paged.kernel_decoder.exact
    got = decode_logits(paged, prompts, 6)
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=f"step {step}")
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_unsnapped_weights_are_not_exact(ops):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(1e-3)
    paged = PagedLlama(model, 256)
    assert not KernelDecoder(model, paged.rotary.cos, paged.rotary.sin, ops).exact
    assert kernel_decoder_for(EngineConfig(quantize="auto"), "cpu", model, paged) is None  # auto: no loss
    assert kernel_decoder_for(EngineConfig(quantize="q4"), "cpu", model, paged) is not None  # asked for


def test_kernel_decoder_selection_and_fallbacks(monkeypatch):
    model = tiny_model("llama")
    paged = PagedLlama(model, 256)
    assert kernel_decoder_for(EngineConfig(quantize="auto"), "cpu", model, paged) is not None
    assert kernel_decoder_for(EngineConfig(quantize="none"), "cpu", model, paged) is None
    assert kernel_decoder_for(EngineConfig(quantize="auto"), "cuda", model, paged) is None
    with pytest.raises(ValueError, match="CPU option"):
        kernel_decoder_for(EngineConfig(quantize="q4"), "cuda", model, paged)
    monkeypatch.setenv(DISABLE_ENV, "0")  # as where no compiler is installed
    assert kernel_decoder_for(EngineConfig(quantize="auto"), "cpu", model, paged) is None
    with pytest.raises(ValueError, match="could not be built"):
        kernel_decoder_for(EngineConfig(quantize="q4"), "cpu", model, paged)
    monkeypatch.delenv(DISABLE_ENV)
    assert load_cpu_kernels(Path("/proc/no-such-dir")) is None  # an unwritable cache: torch ops, no crash
    model.config.hidden_act = "gelu"
    assert "silu" in kernel_decoding_supported(model)
    with pytest.raises(ValueError, match="silu"):
        kernel_decoder_for(EngineConfig(quantize="q4"), "cpu", model, paged)
