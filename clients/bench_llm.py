"""LLM serving benchmark: aggregate decode tokens/s and TTFT at concurrency 1, 8 and 32.

Streaming chat requests with 128 new tokens each go through the official openai client to
a server started here. In the same run, a baseline serves the same requests one at a time
with transformers' `model.generate` (what a plain Flask wrapper does).

    python -m clients.bench_llm                 # fp32 server + baseline
    python -m clients.bench_llm --int8          # also an int8 server at concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

import openai

from clients.server_process import ServerProcess

MODEL = "smollm2-135m-instruct"
TOPICS = [
    "the ocean", "mountains", "a city at night", "coffee", "the moon", "trains", "autumn leaves", "a library",
    "the desert", "snow", "a lighthouse", "bees", "thunderstorms", "an old clock", "the river", "bicycles",
]  # fmt: skip


def prompt(i: int) -> str:
    return f"Write a short story about {TOPICS[i % len(TOPICS)]}."


@dataclass
class PhaseResult:
    label: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    ttfts: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def line(self) -> str:
        p50 = statistics.median(self.ttfts)
        p95 = sorted(self.ttfts)[max(0, round(0.95 * len(self.ttfts)) - 1)]
        return (
            f"{self.label:<28} conc {self.concurrency:>3}  reqs {self.requests:>3}  "
            f"{self.tokens_per_s:7.1f} tok/s   TTFT p50 {p50 * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms"
        )


async def one_request(client: openai.AsyncOpenAI, i: int, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt(i)}], max_tokens=max_tokens, temperature=0.7, top_p=1.0,
        seed=i, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens, ttft if ttft is not None else time.perf_counter() - started


async def phase(base_url: str, label: str, concurrency: int, requests: int, max_tokens: int) -> PhaseResult:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=600)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[tuple[int, float]] = []

    async def worker() -> None:
        while not queue.empty():
            results.append(await one_request(client, queue.get_nowait(), max_tokens))

    await one_request(client, 999, 4)  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    await client.close()
    return PhaseResult(
        label, concurrency, requests, sum(t for t, _ in results), elapsed, [t for _, t in results]
    )


def baseline(requests: int, concurrency: int, max_tokens: int) -> PhaseResult:
    """`requests` arrive together; one `model.generate` at a time serves them."""
    import torch

    from engine.config import default_cache_dir
    from engine.models.llm_loader import load_llm

    bundle = load_llm(MODEL, default_cache_dir(), "cpu")
    model, tok = bundle.model, bundle.tokenizer

    def ids(i: int) -> torch.Tensor:
        enc = tok.apply_chat_template(
            [{"role": "user", "content": prompt(i)}], add_generation_prompt=True, tokenize=True
        )
        return torch.tensor([enc["input_ids"]])

    with torch.inference_mode():
        model.generate(ids(999), max_new_tokens=4, do_sample=False)  # warm-up
        ttfts: list[float] = []
        tokens = 0
        started = time.perf_counter()
        for i in range(requests):
            begin = time.perf_counter()
            out = model.generate(ids(i), max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=True,
                                 temperature=0.7, pad_token_id=tok.eos_token_id)  # fmt: skip
            per_token = (time.perf_counter() - begin) / max_tokens
            # All requests arrived at `started`; each waits for those ahead of it.
            ttfts.append(begin - started + per_token)
            tokens += out.shape[1] - ids(i).shape[1]
        elapsed = time.perf_counter() - started
    return PhaseResult("baseline model.generate", concurrency, requests, tokens, elapsed, ttfts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--int8", action="store_true", help="also measure an --quantize int8 server at the top concurrency"
    )
    parser.add_argument("--baseline-requests", type=int, default=8)
    args = parser.parse_args()

    results: list[PhaseResult] = []
    server = ServerProcess.start(["--asr", "whisper-tiny.en"])
    try:
        rss_idle, _ = server.memory_mb()
        for c in args.concurrency:
            requests = max(4, c)
            results.append(asyncio.run(phase(server.base_url, "rtserve fp32", c, requests, args.max_tokens)))
            print(results[-1].line(), flush=True)
        rss, peak = server.memory_mb()
    finally:
        server.stop()
    if args.int8:
        server = ServerProcess.start(["--asr", "none", "--quantize", "int8"])
        try:
            top = max(args.concurrency)
            results.append(asyncio.run(phase(server.base_url, "rtserve int8", top, top, args.max_tokens)))
            print(results[-1].line(), flush=True)
        finally:
            server.stop()
    base = baseline(args.baseline_requests, args.baseline_requests, args.max_tokens)
    print(base.line(), flush=True)

    by_conc = {r.concurrency: r for r in results if r.label == "rtserve fp32"}
    print("\nSummary")
    print(f"  server RSS with LLM + whisper-tiny.en loaded: {rss_idle:.0f} MiB idle, {rss:.0f} MiB after the run, "
          f"{peak:.0f} MiB peak")  # fmt: skip
    lo, hi = min(by_conc), max(by_conc)
    print(
        f"  concurrency {hi} vs {lo}: {by_conc[hi].tokens_per_s / by_conc[lo].tokens_per_s:.1f}x aggregate tokens/s"
    )
    print(
        f"  concurrency {hi} vs baseline: {by_conc[hi].tokens_per_s / base.tokens_per_s:.1f}x aggregate tokens/s"
    )
    int8 = [r for r in results if r.label == "rtserve int8"]
    if int8:
        print(f"  int8 vs fp32 at concurrency {hi}: {int8[0].tokens_per_s / by_conc[hi].tokens_per_s:.2f}x")


if __name__ == "__main__":
    main()
