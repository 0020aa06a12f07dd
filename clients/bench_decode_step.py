"""One LLM step in-process, side by side: the q4 decode kernels against torch (issue 18).

    python -m clients.bench_decode_step

Loads SmolLM2 once (no server: this measures the model pieces behind bench_llm's servers) and prints
per-step milliseconds, best of --repeats, for:
  decode   one token per sequence over a 150-token context, batch 1 / 8 / 32: torch fp32 (PagedLlama),
           torch's packed int4 (`--quantize int4`) and the q4 kernels (`--quantize q4`, the default)
  prefill  one prompt of 30 / 100 / 400 tokens: torch fp32 (what every format but int4 prefills with)
           against torch's packed int4
  sample   one row over the vocabulary: torch.multinomial against the sampler's inverse-CDF draw
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch

from engine.config import default_cache_dir
from engine.kernels.build import load_cpu_kernels
from engine.kernels.ops import CpuDecodeKernels
from engine.llm.kv_cache import KVCache
from engine.llm.sampler import _draw
from engine.models.kernel_decoder import KernelDecoder
from engine.models.llm_loader import load_llm
from engine.models.paged_llama import AttentionMetadata, PagedLlama
from engine.models.quantize import quantize_llm_weight_only

CONTEXT = 150


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def decode_args(paged: PagedLlama, batch: int) -> tuple:
    cache = KVCache.allocate(paged.num_layers, batch * 16, 16, paged.num_kv_heads, paged.head_dim,
                             torch.float32, "cpu")  # fmt: skip
    cache.k.normal_()
    cache.v.normal_()
    slots = torch.stack([torch.arange(CONTEXT) + b * 256 for b in range(batch)])
    mask = torch.ones(batch, 1, 1, CONTEXT, dtype=torch.bool)
    meta = AttentionMetadata(False, slots[:, -1].contiguous(), context_slots=slots, context_mask=mask)
    ids = torch.randint(0, 1000, (batch,))
    return ids, torch.full((batch,), CONTEXT - 1), meta, cache, torch.arange(batch)


def prefill_args(tokens: int) -> tuple:
    cache = KVCache.allocate(30, tokens // 16 + 1, 16, 3, 64, torch.float32, "cpu")
    meta = AttentionMetadata(True, torch.arange(tokens), prefill_lengths=[tokens])
    return torch.randint(0, 1000, (tokens,)), torch.arange(tokens), meta, cache, torch.tensor([tokens - 1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    model = load_llm("smollm2-135m-instruct", default_cache_dir(), "cpu").model
    fp32 = PagedLlama(model, 2048)
    int4 = PagedLlama(quantize_llm_weight_only(copy.deepcopy(model), "int4"), 2048)
    q4 = PagedLlama(model, 2048)
    library = load_cpu_kernels(default_cache_dir())
    assert library is not None, "the q4 kernels could not be built here"
    q4.kernel_decoder = KernelDecoder(model, q4.rotary.cos, q4.rotary.sin,
                                      CpuDecodeKernels(library, torch.get_num_threads()))  # fmt: skip
    with torch.inference_mode():
        for batch in (1, 8, 32):
            inputs = decode_args(fp32, batch)
            ms = {name: best_ms(lambda p=p, i=inputs: p.forward(*i), args.repeats)
                  for name, p in (("fp32", fp32), ("int4", int4), ("q4", q4))}  # fmt: skip
            print(f"decode  batch {batch:>2}: fp32 {ms['fp32']:6.1f} ms  int4 {ms['int4']:6.1f} ms  "
                  f"q4 kernels {ms['q4']:6.1f} ms   q4 vs fp32 {ms['fp32'] / ms['q4']:.2f}x", flush=True)  # fmt: skip
        for tokens in (30, 100, 400):
            inputs = prefill_args(tokens)
            a, b = (
                best_ms(lambda p=p, i=inputs: p.forward(*i), max(3, args.repeats // 3)) for p in (fp32, int4)
            )
            print(
                f"prefill {tokens:>3} tokens: fp32 {a:6.1f} ms  int4 {b:6.1f} ms   int4 vs fp32 {a / b:.2f}x"
            )
    probs = torch.softmax(torch.randn(fp32.vocab_size) / 0.7, -1)
    generator = torch.Generator().manual_seed(0)
    slow = best_ms(lambda: torch.multinomial(probs, 1, generator=generator), args.repeats * 10)
    fast = best_ms(lambda: _draw(probs, generator), args.repeats * 10)
    print(f"sample  one row of {fp32.vocab_size}: torch.multinomial {slow:.3f} ms  inverse CDF {fast:.3f} ms   "
          f"{slow / fast:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
