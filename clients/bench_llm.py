"""LLM serving benchmark: aggregate decode tokens/s and TTFT at concurrency 1, 8 and 32.

Streaming chat requests with 128 new tokens each go through the official openai client to
a server started here. In the same run, a baseline serves the same requests one at a time
with transformers' `model.generate` (what a plain Flask wrapper does).

    python -m clients.bench_llm                 # default server (q4 decode kernels) + baseline
    python -m clients.bench_llm --int8          # also an int8 server at concurrency 32
    python -m clients.bench_llm --before --raw  # issue 18: the fp32 torch path before it, same run
    python -m clients.bench_llm --compare http://127.0.0.1:8080   # also any OpenAI-compatible server
                                                # (a llama-server on the same GGUF: see the README)
    python -m clients.bench_llm --constrained   # json_schema-constrained vs unconstrained at concurrency 32
    python -m clients.bench_llm --lora          # base vs 4 rank-16 vs 8 mixed-rank LoRA adapters at 32
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

    def ttft(self, quantile: float) -> float:
        ordered = sorted(self.ttfts)
        return ordered[max(0, round(quantile * len(ordered)) - 1)]

    def line(self) -> str:
        p50 = statistics.median(self.ttfts)
        return (
            f"{self.label:<28} conc {self.concurrency:>3}  reqs {self.requests:>3}  "
            f"{self.tokens_per_s:7.1f} tok/s   TTFT p50 {p50 * 1000:7.0f} ms  p95 {self.ttft(0.95) * 1000:7.0f} ms"
        )


async def one_request(
    client: openai.AsyncOpenAI, i: int, max_tokens: int, extra: dict | None = None
) -> tuple[int, float]:
    started = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt(i)}], max_tokens=max_tokens, temperature=0.7, top_p=1.0,
        seed=i, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True, **(extra or {})},
    )  # fmt: skip
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens, ttft if ttft is not None else time.perf_counter() - started


async def phase(
    base_url: str, label: str, concurrency: int, requests: int, max_tokens: int, extra: dict | None = None
) -> PhaseResult:
    """extra: more body fields for every request (a response_format, for --constrained)."""
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=600)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[tuple[int, float]] = []

    async def worker() -> None:
        while not queue.empty():
            results.append(await one_request(client, queue.get_nowait(), max_tokens, extra))

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


def sweep(
    base_url: str, label: str, concurrencies: list[int], max_tokens: int, extra: dict | None = None
) -> list[PhaseResult]:
    out = []
    for c in concurrencies:
        out.append(asyncio.run(phase(base_url, label, c, max(4, c), max_tokens, extra)))
        print(out[-1].line(), flush=True)
    return out


def raw_decode(max_tokens: int) -> PhaseResult:
    """The no-server reference: one request, transformers' forward with its KV cache, batch 1, greedy."""
    import torch

    from engine.config import default_cache_dir
    from engine.models.llm_loader import load_llm

    bundle = load_llm(MODEL, default_cache_dir(), "cpu")
    enc = bundle.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt(0)}], add_generation_prompt=True, tokenize=True
    )
    ids = torch.tensor([enc["input_ids"]])
    with torch.inference_mode():
        bundle.model.generate(ids, max_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        first = bundle.model.generate(ids, max_new_tokens=1, do_sample=False)
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        out = bundle.model.generate(
            ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False
        )
        elapsed = time.perf_counter() - started
    assert first.shape[1] == ids.shape[1] + 1
    return PhaseResult("transformers batch-1 decode", 1, 1, out.shape[1] - ids.shape[1], elapsed, [ttft])


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
    parser.add_argument(
        "--before", action="store_true",
        help="also a server as before issue 18 (--quantize none --num-scheduler-steps 1), same load, same run",
    )  # fmt: skip
    parser.add_argument("--after-args", default="", help="extra rtserve flags for the main server, e.g. "
                        "'--quantize int4' or '--num-scheduler-steps 8'")  # fmt: skip
    parser.add_argument("--compare", metavar="URL", help="also drive this OpenAI-compatible server (e.g. a "
                        "llama-server started with the same GGUF) with the same load")  # fmt: skip
    parser.add_argument("--raw", action="store_true", help="also a raw transformers batch-1 decode row")
    parser.add_argument(
        "--constrained", action="store_true",
        help="instead: json_schema-constrained vs unconstrained at the top concurrency (bench_llm_constrained.py)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="--constrained: alternating rounds of each")
    parser.add_argument(
        "--lora", action="store_true",
        help="instead: base-only vs 4 rank-16 adapters vs 8 mixed-rank adapters at the top concurrency "
        "(bench_llm_lora.py; --max-tokens 64 is plenty)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.lora:
        from clients.bench_llm_lora import run as run_lora

        run_lora(max(args.concurrency), args.max_tokens, args.rounds)
        return
    if args.constrained:
        from clients.bench_llm_constrained import run

        run(max(args.concurrency), args.max_tokens, args.rounds)
        return

    results: list[PhaseResult] = []
    main_label = f"rtserve {args.after_args or 'default'}"
    if args.before:
        before = ServerProcess.start(["--asr", "none", "--quantize", "none", "--num-scheduler-steps", "1"])
        try:
            results += sweep(
                before.base_url, "rtserve before (fp32, 1 step)", args.concurrency, args.max_tokens
            )
        finally:
            before.stop()
    server = ServerProcess.start(["--asr", "whisper-tiny.en", *args.after_args.split()])
    try:
        rss_idle, _ = server.memory_mb()
        results += sweep(server.base_url, main_label, args.concurrency, args.max_tokens)
        rss, peak = server.memory_mb()
    finally:
        server.stop()
    if args.compare:
        # llama-server keeps each slot's prompt for the next request; rtserve has no prefix cache, and every
        # phase here resends the same prompts, so it would measure a cache hit against a prefill
        no_prompt_cache = {"cache_prompt": False}
        results += sweep(
            args.compare.rstrip("/"),
            "compare " + args.compare,
            args.concurrency,
            args.max_tokens,
            no_prompt_cache,
        )
    if args.raw:
        print(raw_decode(args.max_tokens).line(), flush=True)
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

    by_conc = {r.concurrency: r for r in results if r.label == main_label}
    for label in {r.label for r in results} - {main_label}:
        for r in results:
            if r.label == label and r.concurrency in by_conc:
                ratio = by_conc[r.concurrency].tokens_per_s / r.tokens_per_s
                print(f"  {main_label} vs {label} at concurrency {r.concurrency}: {ratio:.2f}x tokens/s")
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
