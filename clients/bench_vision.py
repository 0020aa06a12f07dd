"""Vision-language serving benchmark (issue 14): image-chat requests/s and TTFT at concurrency 1 and 8.

The model has SmolVLM-256M-Instruct's exact architecture (SigLIP-B/16 at 512 px, SmolLM2-135M) with random
weights (tests/vlm_models.py smolvlm_256m), built once under artifacts/ and served with `--llm DIR`. Every
request is one streamed chat turn through the official openai client: a question and one picture (a JPEG
data: URL, a different picture each request) and 64 new tokens (greedy, ignore_eos). In the same run a
baseline serves the same requests one at a time with transformers' `model.generate` on the processor's
output (what the seed Flask server does): its TTFT is one request's own, from the JPEG bytes to the first
new token, the figure concurrency 1 competes with. The three run in interleaved rounds (c1, c8, baseline,
then again), so a shared machine's changing load weighs on all of them alike.

    python -m clients.bench_vision                      # one 512 px tile an image (64 image tokens)
    python -m clients.bench_vision --image-splitting    # the real processor default: up to 4x4 tiles + 1
    python -m clients.bench_vision --requests 16 --baseline-requests 6
    python -m clients.bench_vision --llm HuggingFaceTB/SmolVLM-256M-Instruct   # real weights (online)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import re
import time
from pathlib import Path
from typing import Any

import openai
import requests as http

from clients.bench_llm import PhaseResult as LLMPhaseResult
from clients.server_process import ROOT, ServerProcess

QUESTION = "What is in this image? Describe it in detail."
NEW_TOKENS = 64
IMAGE_SIDE = 384


class PhaseResult(LLMPhaseResult):
    """bench_llm's phase figures, plus requests per second (an image request's cost is mostly its image)."""

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        return (
            f"{self.label:<26} conc {self.concurrency:>2}  reqs {self.requests:>3}  {self.requests_per_s:6.3f} req/s  "
            f"{self.tokens_per_s:6.1f} tok/s   TTFT p50 {self.ttft(0.5) * 1000:6.0f} ms  "
            f"p95 {self.ttft(0.95) * 1000:6.0f} ms"
        )


def model_dir(image_splitting: bool) -> Path:
    """The random SmolVLM-256M checkpoint, built on first use (about 1 GB in float32)."""
    from tests.vlm_models import smolvlm_256m

    target = (
        ROOT / "artifacts" / "bench_vision" / ("smolvlm-256m-split" if image_splitting else "smolvlm-256m")
    )
    marker = target / ".complete"
    if not marker.exists():
        print(f"building {target} ...", flush=True)
        smolvlm_256m(target, do_image_splitting=image_splitting)
        marker.write_text("ok")
    return target


def picture(seed: int) -> bytes:
    """A JPEG of smooth colour bands and noise, different for every seed."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, IMAGE_SIDE)[None, :, None] * rng.random(3)[None, None, :]
    pixels = ramp + rng.normal(0, 20, (IMAGE_SIDE, IMAGE_SIDE, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def messages(image: bytes) -> list[dict[str, Any]]:
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return [{"role": "user", "content": parts}]


async def one_request(client: openai.AsyncOpenAI, image: bytes, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds to the first generated token)."""
    started = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    stream = await client.chat.completions.create(
        model="vlm", messages=messages(image), max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "min_tokens": max_tokens, "return_token_ids": True},
    )  # fmt: skip
    async for chunk in stream:
        if ttft is None and chunk.choices:
            choice = chunk.choices[0]
            if getattr(choice, "token_ids", None) or choice.delta.content:
                ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens, ttft if ttft is not None else time.perf_counter() - started


async def phase(base_url: str, concurrency: int, images: list[bytes], max_tokens: int) -> PhaseResult:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=1800)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for image in images:
        queue.put_nowait(image)
    results: list[tuple[int, float]] = []

    async def worker() -> None:
        while not queue.empty():
            results.append(await one_request(client, queue.get_nowait(), max_tokens))

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    await client.close()
    tokens = [t for t, _ in results]
    assert all(t == max_tokens for t in tokens), f"every request must make {max_tokens} tokens: {tokens}"
    return PhaseResult("rtserve", concurrency, len(images), sum(tokens), elapsed, [t for _, t in results])


def vision_counters(base_url: str) -> str:
    text = http.get(f"{base_url}/metrics", timeout=10).text
    found = re.findall(r"^(rtserve_vision_\w+) (\S+)$", text, re.MULTILINE)
    return ", ".join(f"{name} {float(value):.0f}" for name, value in found) or "no vision counters"


class _FirstToken:
    """A generate streamer that notes when the first new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.at: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2 and self.at is None:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


class Baseline:
    """One `model.generate` at a time, in this process: JPEG bytes -> PIL -> chat template + processor ->
    greedy generate of exactly `max_tokens`; TTFT is each request's own, from its bytes to its first token."""

    def __init__(self, path: Path | str) -> None:
        from tests.vlm_models import load

        self.model, self.processor = load(path)
        self.chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]

    def one(self, image: bytes, new_tokens: int) -> tuple[int, float]:
        import torch
        from PIL import Image

        from tests.vlm_models import hf_inputs

        started = time.perf_counter()
        inputs = hf_inputs(self.processor, self.chat, [Image.open(io.BytesIO(image)).convert("RGB")])
        timer = _FirstToken()
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                streamer=timer,
            )
        assert timer.at is not None
        return out.shape[1] - inputs["input_ids"].shape[1], timer.at - started

    def phase(self, images: list[bytes], max_tokens: int) -> PhaseResult:
        started = time.perf_counter()
        results = [self.one(image, max_tokens) for image in images]
        elapsed = time.perf_counter() - started
        tokens = sum(t for t, _ in results)
        return PhaseResult(
            "baseline model.generate", 1, len(images), tokens, elapsed, [t for _, t in results]
        )


def merged(parts: list[PhaseResult]) -> PhaseResult:
    """One row from a label's rounds: requests and seconds add up, TTFTs pool."""
    first = parts[0]
    return PhaseResult(
        first.label, first.concurrency, sum(p.requests for p in parts), sum(p.tokens for p in parts),
        sum(p.seconds for p in parts), [t for p in parts for t in p.ttfts],
    )  # fmt: skip


def run(path: Path | str, counts: dict[str, int], rounds: int, max_tokens: int) -> dict[str, PhaseResult]:
    """Rounds of (concurrency 1, concurrency 8, baseline), so that a shared machine's load drifts into
    every figure alike; a new picture every request (no embedding-cache hits)."""
    base = Baseline(path)
    base.one(picture(10_000), 4)  # warm-up
    (ROOT / "artifacts").mkdir(exist_ok=True)
    flags = ["--served-model-name", "vlm", "--asr", "none", "--embed", "none", "--tts", "none"]
    server = ServerProcess.start(
        ["--llm", str(path), *flags], log_path=ROOT / "artifacts" / "bench_vision_server.log"
    )
    parts: dict[str, list[PhaseResult]] = {"c1": [], "c8": [], "baseline": []}
    seeds = iter(range(1_000_000))
    try:
        asyncio.run(phase(server.base_url, 1, [picture(10_001)], 4))  # warm-up
        for round_index in range(rounds):
            for key in parts:
                images = [picture(next(seeds)) for _ in range(max(1, counts[key] // rounds))]
                if key == "baseline":
                    parts[key].append(base.phase(images, max_tokens))
                else:
                    parts[key].append(asyncio.run(phase(server.base_url, int(key[1:]), images, max_tokens)))
                print(f"round {round_index + 1}: {parts[key][-1].line()}", flush=True)
        print(f"  /metrics: {vision_counters(server.base_url)}", flush=True)
    finally:
        server.stop()
    return {key: merged(results) for key, results in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=16, help="requests at concurrency 8")
    parser.add_argument("--requests-c1", type=int, default=4, help="requests at concurrency 1")
    parser.add_argument("--baseline-requests", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds; each gets 1/rounds of the requests"
    )
    parser.add_argument("--max-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument(
        "--image-splitting", action="store_true",
        help="SmolVLM's processor default (an image upscaled to 2048 px and cut into 512 px tiles); without "
        "it one 512 px tile an image",
    )  # fmt: skip
    parser.add_argument(
        "--llm", help="a real checkpoint instead (hub id or directory), served and loaded as is"
    )
    args = parser.parse_args()
    path = args.llm or model_dir(args.image_splitting)
    counts = {"c1": args.requests_c1, "c8": args.requests, "baseline": args.baseline_requests}
    rows = run(path, counts, args.rounds, args.max_tokens)
    c1, c8, base = rows["c1"], rows["c8"], rows["baseline"]
    print("\nAll rounds")
    for row in (c1, c8, base):
        print(row.line())
    print(f"\nSummary (one image and {args.max_tokens} new tokens a request)")
    print(
        f"  concurrency 8 vs baseline: {c8.requests_per_s / base.requests_per_s:.2f}x requests/s (target >= 3x)"
    )
    print(f"  concurrency 8 vs 1:        {c8.requests_per_s / c1.requests_per_s:.2f}x requests/s")
    print(
        f"  TTFT p50 at concurrency 1 vs baseline: {c1.ttft(0.5) / base.ttft(0.5):.2f}x "
        f"({c1.ttft(0.5) * 1000:.0f} ms vs {base.ttft(0.5) * 1000:.0f} ms; target <= 1x)"
    )


if __name__ == "__main__":
    main()
