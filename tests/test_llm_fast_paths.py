"""The LLM's fast paths (issue 18): multi-step decoding is token-for-token what single steps make; the
default q4 decode kernels compute with the shipped weights; the weight-only int4/int8w formats hold
perplexity and still answer (kernel-level checks: tests/test_cpu_kernels.py). No timing here: see clients/bench_llm.py."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import torch
import torch.nn.functional as F

from engine.config import EngineConfig, default_cache_dir
from engine.core import Engine
from engine.llm.kv_cache import KVCache
from engine.models.llm_loader import load_llm
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.models.quantize import Int4Linear, quantize_llm_weight_only
from engine.request import GenerationRequest
from engine.sampling import SamplingParams
from tests.test_engine_llm import EVAL_PASSAGE, chat_ids, run

MIXED = [  # different prompt lengths, stops, max_tokens, sampling options: they finish at different steps
    ("What is the capital of France?", {"max_tokens": 20, "temperature": 0}),
    ("Count from 1 to 20, one number per line.", {"max_tokens": 40, "temperature": 0, "stop": ["7"]}),
    ("Write a haiku about the sea.", {"max_tokens": 7, "temperature": 0}),
    ("Tell me a story.", {"max_tokens": 18, "temperature": 1.0, "seed": 3}),
    ("List three fruits.", {"max_tokens": 16, "temperature": 0, "repetition_penalty": 1.3, "min_tokens": 12}),
    ("Say hello in Spanish.", {"max_tokens": 12, "temperature": 0, "logprobs": 2}),
]


@pytest_asyncio.fixture(scope="module")
async def engine() -> AsyncIterator[Engine]:
    engine = Engine.load(EngineConfig(asr=[], embed=[], tts=[], num_scheduler_steps=4))
    await engine.start()
    yield engine
    await engine.stop()


def set_steps(engine: Engine, steps: int) -> None:
    assert engine._llm is not None
    engine._llm.scheduler.num_steps = steps


async def run_full(engine: Engine, prompt: str, **params) -> tuple[list[int], str, str | None, list]:
    ids = chat_ids(engine.tokenizer, prompt)
    tokens, text, finish, logprobs = [], "", None, []
    async for out in engine.generate(GenerationRequest(ids, SamplingParams(**params))):
        tokens += out.token_ids
        text += out.text
        finish = out.finish_reason
        logprobs += [(lp.token_id, round(lp.logprob, 4)) for lp in out.logprobs or []]
    return tokens, text, finish, logprobs


async def test_multi_step_equals_single_step_alone_and_mixed(engine):
    single, multi = {}, {}
    for steps, into in ((1, single), (4, multi)):
        set_steps(engine, steps)
        into["alone"] = await run_full(engine, *MIXED[0][:1], **MIXED[0][1])
        into["mixed"] = await asyncio.gather(*[run_full(engine, p, **kw) for p, kw in MIXED])
    set_steps(engine, 4)
    assert "Paris" in multi["alone"][1]
    assert multi["alone"] == single["alone"]
    for (prompt, _), a, b in zip(MIXED, single["mixed"], multi["mixed"], strict=True):
        assert a == b, prompt
    finishes = [f for _, _, f, _ in multi["mixed"]]
    assert finishes[1] == "stop" and "7" not in multi["mixed"][1][1]
    assert finishes[2] == "length" and len(multi["mixed"][2][0]) == 7
    assert len(multi["mixed"][4][0]) >= 12  # min_tokens held across inner steps
    assert engine.stats().kv_blocks_used == 0  # reserved slots went back with their sequences


async def test_abort_mid_multi_step_frees_and_leaves_others_exact(engine):
    set_steps(engine, 8)
    expected = await run(engine, "Name a color.", max_tokens=24, temperature=0)
    before = engine.stats().llm_requests_aborted
    stream = engine.generate(
        GenerationRequest(chat_ids(engine.tokenizer, "Tell me a story."), SamplingParams(max_tokens=300))
    )
    other = asyncio.ensure_future(run(engine, "Name a color.", max_tokens=24, temperature=0))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    assert await other == expected
    for _ in range(50):
        stats = engine.stats()
        if stats.llm_running == 0 and stats.kv_blocks_used == 0:
            break
        await asyncio.sleep(0.1)
    assert stats.llm_requests_aborted == before + 1
    assert stats.llm_running == 0 and stats.kv_blocks_used == 0
    set_steps(engine, 4)


@pytest.fixture(scope="module")
def bundle():
    return load_llm("smollm2-135m-instruct", default_cache_dir(), "cpu")


@pytest.mark.parametrize("fmt", ["int4", "int8w"])
def test_weight_only_formats_hold_quality(bundle, fmt):
    """Perplexity within 3 % of fp32 (measured: fp32 7.57, int4 7.59, int8w 7.54) and the right answer."""
    model, tok = bundle.model, bundle.tokenizer
    quantized = quantize_llm_weight_only(copy.deepcopy(model), fmt)
    assert not any(isinstance(m, torch.nn.Linear) for m in quantized.modules())
    if fmt == "int4":
        assert isinstance(quantized.model.layers[0].mlp.down_proj, Int4Linear)
    ids = tok(EVAL_PASSAGE, return_tensors="pt").input_ids
    with torch.inference_mode():
        ppl_fp32 = torch.exp(model(ids, labels=ids).loss).item()
        ppl = torch.exp(quantized(ids, labels=ids).loss).item()
        assert ppl < ppl_fp32 * 1.03, (ppl_fp32, ppl)
        prompt = torch.tensor([chat_ids(tok, "What is the capital of France?")])
        out = quantized.generate(prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt.shape[1] :])


def test_int4_keeps_the_shipped_q4_1_codes(bundle):
    """SmolLM2 ships as GGUF Q4_1: its decoder weights are 4-bit codes in groups of 32, which int4 keeps
    exactly (only the group scale and zero are rounded to bf16)."""
    weight = bundle.model.model.layers[2].self_attn.q_proj.weight.detach()
    groups = weight.reshape(weight.shape[0], -1, 32)
    low = groups.amin(-1, keepdim=True)
    scale = (groups.amax(-1, keepdim=True) - low) / 15
    assert torch.allclose((groups - low) / scale, ((groups - low) / scale).round(), atol=1e-3)


def teacher_forced_nll(paged: PagedLlama, ids: list[int]) -> torch.Tensor:
    """Prefill the first token, then decode the rest one step at a time, each fed the passage's own next
    token: the negative log-likelihood of every later token, as decode steps compute it."""
    cache = KVCache.allocate(paged.num_layers, len(ids) // 16 + 1, 16, paged.num_kv_heads, paged.head_dim,
                             torch.float32, "cpu")  # fmt: skip
    meta = AttentionMetadata(True, torch.tensor([0]), prefill_lengths=[1])
    logits = [paged.forward(torch.tensor(ids[:1]), torch.tensor([0]), meta, cache, torch.tensor([0]))]
    for pos in range(1, len(ids) - 1):
        meta = AttentionMetadata(False, torch.tensor([pos]), context_slots=torch.arange(pos + 1)[None],
                                 context_mask=torch.ones(1, 1, 1, pos + 1, dtype=torch.bool))  # fmt: skip
        logits.append(paged.forward(torch.tensor(ids[pos : pos + 1]), torch.tensor([pos]), meta, cache,
                                    torch.tensor([0])))  # fmt: skip
    return F.cross_entropy(torch.cat(logits), torch.tensor(ids[1:]), reduction="none")


async def test_q4_decodes_with_the_shipped_weights(bundle, engine):
    """The default (--quantize auto) decodes SmolLM2 through the CPU kernels with its own GGUF weights: every
    decode step's loss within 1e-3 of fp32's, perplexity within 0.1 %, greedy tokens as transformers'."""
    decoder = engine._llm.runner.model.kernel_decoder
    assert decoder is not None and decoder.exact
    ids = bundle.tokenizer(EVAL_PASSAGE).input_ids
    paged = PagedLlama(bundle.model, 2048)
    with torch.inference_mode():
        fp32 = teacher_forced_nll(paged, ids)
        paged.kernel_decoder = decoder
        q4 = teacher_forced_nll(paged, ids)
    assert (q4 - fp32).abs().max() < 1e-3, (q4 - fp32).abs().max()
    assert abs(q4.mean().exp() / fp32.mean().exp() - 1) < 1e-3
    set_steps(engine, 1)
    for prompt in ("What is the capital of France?", "Write a haiku about the sea.", "Tell me a story."):
        prompt_ids = torch.tensor([chat_ids(bundle.tokenizer, prompt)])
        with torch.inference_mode():
            expected = bundle.model.generate(prompt_ids, max_new_tokens=24, do_sample=False)
        tokens, text, _, _ = await run_full(engine, prompt, max_tokens=24, temperature=0)
        assert tokens == expected[0, prompt_ids.shape[1] :].tolist()[: len(tokens)], prompt
    set_steps(engine, 4)
