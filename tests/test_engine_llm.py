"""The LLM engine in-process: paged forward vs HF, continuous batching, sampling, KV accounting."""

from __future__ import annotations

import asyncio
import copy
import warnings

import pytest
import pytest_asyncio
import torch

from engine.config import EngineConfig, default_cache_dir
from engine.core import Engine
from engine.llm.kv_cache import KVCache
from engine.models.llm_loader import load_llm
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.models.quantize import quantize_llm_int8
from engine.request import GenerationRequest
from engine.sampling import SamplingParams

PROMPTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "List three fruits.",
    "Explain gravity in one sentence.", "Who wrote Hamlet?", "What is 2+2?", "Name a color.",
    "Say hello in Spanish.", "What is the boiling point of water?", "Describe a cat.",
    "What is the largest planet?", "Give me a synonym for happy.", "How many days are in a week?",
    "What language is spoken in Brazil?", "Tell me a fun fact.", "What is photosynthesis?",
]  # fmt: skip


EVAL_PASSAGE = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
    'Locally nicknamed "La dame de fer" (French for "Iron Lady"), it was constructed as the centerpiece '
    "of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution. Although"
    " initially criticised by some of France's leading artists and intellectuals for its design, it has "
    "since become a global cultural icon of France and one of the most recognisable structures in the "
    "world. The tower received 5,889,000 visitors in 2022. The Eiffel Tower is the most visited monument "
    "with an entrance fee in the world. Photosynthesis is a process used by plants and other organisms to"
    " convert light energy into chemical energy that, through cellular respiration, can later be released"
    " to fuel the organism's activities. Some of this chemical energy is stored in carbohydrate "
    "molecules, such as sugars and starches, which are synthesized from carbon dioxide and water. Most "
    "plants, algae, and cyanobacteria perform photosynthesis; such organisms are called photoautotrophs."
)


@pytest.fixture(scope="module")
def bundle():
    return load_llm("smollm2-135m-instruct", default_cache_dir(), "cpu")


@pytest_asyncio.fixture(scope="module")
async def engine():
    engine = Engine.load(EngineConfig(asr=[], max_num_seqs=32))
    await engine.start()
    yield engine
    await engine.stop()


def chat_ids(tokenizer, prompt: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
    )


async def run(engine: Engine, prompt: str | list[int], **params) -> tuple[list[int], str, str | None]:
    ids = chat_ids(engine.tokenizer, prompt) if isinstance(prompt, str) else prompt
    tokens: list[int] = []
    text = ""
    finish = None
    async for out in engine.generate(GenerationRequest(ids, SamplingParams(**params))):
        tokens += out.token_ids
        text += out.text
        finish = out.finish_reason
    return tokens, text, finish


def test_paged_forward_matches_hf(bundle):
    model, tok = bundle.model, bundle.tokenizer
    paged = PagedLlama(model, 512)
    cache = KVCache.allocate(
        paged.num_layers, 8, 16, paged.num_kv_heads, paged.head_dim, torch.float32, "cpu"
    )
    ids = tok("The capital of France is", return_tensors="pt").input_ids[0]
    n = len(ids)
    with torch.inference_mode():
        ref = model(ids[None]).logits[0]
    meta = AttentionMetadata(True, torch.arange(n), prefill_lengths=[n])
    ours = paged.forward(ids, torch.arange(n), meta, cache, torch.tensor([n - 1]))
    assert torch.allclose(ours[0], ref[-1], atol=1e-3), (ours[0] - ref[-1]).abs().max()
    nxt = ours[0].argmax()
    assert tok.decode(nxt).strip() == "Paris"
    with torch.inference_mode():
        ref2 = model(torch.cat([ids, nxt[None]])[None]).logits[0, -1]
    meta = AttentionMetadata(
        False, torch.tensor([n]), context_slots=torch.arange(n + 1)[None],
        context_mask=torch.ones(1, 1, 1, n + 1, dtype=torch.bool),
    )  # fmt: skip
    ours2 = paged.forward(nxt[None], torch.tensor([n]), meta, cache, torch.tensor([0]))
    assert torch.allclose(ours2[0], ref2, atol=1e-3)


async def test_answer_mentions_paris(engine):
    _, text, finish = await run(engine, "What is the capital of France?", max_tokens=32, temperature=0)
    assert "Paris" in text
    assert finish == "stop"


async def test_greedy_identical_alone_and_in_batch_of_32(engine):
    prompts = (PROMPTS * 2)[:32]
    alone = {p: (await run(engine, p, max_tokens=32, temperature=0))[0] for p in PROMPTS}
    batched = await asyncio.gather(*[run(engine, p, max_tokens=32, temperature=0) for p in prompts])
    for prompt, (tokens, _, _) in zip(prompts, batched, strict=True):
        assert tokens == alone[prompt], prompt
    assert engine.stats().llm_max_batch_size >= 16


async def test_seed_reproducible_and_params_respected(engine):
    a = await run(engine, "Tell me a story.", max_tokens=24, temperature=1.0, seed=7)
    b = await run(engine, "Tell me a story.", max_tokens=24, temperature=1.0, seed=7)
    c = await run(engine, "Tell me a story.", max_tokens=24, temperature=1.0, seed=8)
    assert a[0] == b[0]
    assert a[0] != c[0]
    tokens, _, finish = await run(engine, "Tell me a story.", max_tokens=5, temperature=0)
    assert len(tokens) == 5 and finish == "length"


async def test_logit_bias_and_stop(engine):
    tok = engine.tokenizer
    forced = tok.encode(" banana", add_special_tokens=False)[0]
    tokens, _, _ = await run(
        engine, "Say something.", max_tokens=3, temperature=0, logit_bias={forced: 100.0}
    )
    assert tokens == [forced] * 3
    _, text, finish = await run(
        engine, "Count from 1 to 20, one number per line.", max_tokens=80, temperature=0, stop=["7"]
    )
    assert finish == "stop" and "7" not in text and "6" in text
    tokens, _, finish = await run(engine, "Say something.", max_tokens=10, temperature=0, stop_token_ids=[forced],
                                  logit_bias={forced: 100.0})  # fmt: skip
    assert tokens == [forced] and finish == "stop"


async def test_logprobs(engine):
    ids = chat_ids(engine.tokenizer, "What is the capital of France?")
    outs = [
        o
        async for o in engine.generate(
            GenerationRequest(ids, SamplingParams(max_tokens=4, temperature=0, logprobs=3))
        )
    ]
    for out in outs:
        lp = out.logprobs[0]
        assert len(lp.top) == 3 and lp.top[0].token_id == lp.token_id  # greedy picks the top token
        assert lp.logprob <= 0 and lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob


async def test_cancel_frees_slot_and_cache(engine):
    before = engine.stats().llm_requests_aborted
    stream = engine.generate(GenerationRequest([1, 2, 3, 4], SamplingParams(max_tokens=400, temperature=0.8)))
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(50):
        stats = engine.stats()
        if stats.llm_running == 0 and stats.kv_blocks_used == 0:
            break
        await asyncio.sleep(0.1)
    assert stats.llm_running == 0 and stats.kv_blocks_used == 0
    assert stats.llm_requests_aborted == before + 1


async def test_full_kv_cache_queues_instead_of_dropping():
    # 8 blocks of 16 tokens: room for about two of these requests at a time.
    engine = Engine.load(EngineConfig(asr=[], kv_cache_tokens=128, max_model_len=128))
    await engine.start()
    try:
        results = await asyncio.gather(*[run(engine, p, max_tokens=24, temperature=0) for p in PROMPTS[:6]])
        assert all(len(tokens) > 0 for tokens, _, _ in results)
        assert engine.stats().llm_max_batch_size < 6  # they could not all run at once
        assert engine.stats().kv_blocks_used == 0
        with pytest.raises(ValueError, match="maximum context length"):
            await run(engine, list(range(1, 120)), max_tokens=20)
    finally:
        await engine.stop()


def test_int8_quality_holds(bundle):
    """--quantize int8 keeps perplexity within 30% and still answers correctly.

    Token-for-token greedy equality with fp32 does not hold for a 135M model (outputs drift
    after a few tokens), so quality is judged by perplexity and by the answer's content.
    """
    model, tok = bundle.model, bundle.tokenizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_llm_int8(copy.deepcopy(model))
    text = EVAL_PASSAGE
    ids = tok(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        ppl_fp32 = torch.exp(model(ids, labels=ids).loss).item()
        ppl_int8 = torch.exp(quantized(ids, labels=ids).loss).item()
    assert ppl_int8 < ppl_fp32 * 1.30, (ppl_fp32, ppl_int8)
    prompt = torch.tensor([chat_ids(tok, "What is the capital of France?")])
    with torch.inference_mode():
        out = quantized.generate(prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt.shape[1] :])
