"""Multi-LoRA serving: aggregate decode tok/s at one concurrency for base-only requests, requests spread over
4 adapters of rank 16, and requests spread over 8 adapters of mixed ranks, all on one server in one run.

The adapters are written here in PEFT's format (adapter_config.json + adapter_model.safetensors) with random
weights on every projection (q, k, v, o, gate, up, down: the costliest case) and loaded at runtime through
POST /v1/load_lora_adapter, so the server's memory can be read before and after.

    python -m clients.bench_llm --lora                 # concurrency 32, 64 new tokens per request
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import openai
import requests
import torch
from safetensors.torch import save_file
from transformers import AutoConfig

from clients.bench_llm import MODEL, PhaseResult, prompt
from clients.server_process import ServerProcess
from engine.config import default_cache_dir
from engine.models.lora import ATTENTION_MODULES, TARGET_MODULES, module_shapes

MIXED_RANKS = [8, 8, 16, 16, 16, 16, 32, 32]
WORKLOADS = {  # label: the model each request names, by request index
    "base only": [MODEL],
    "4 adapters, rank 16": [f"r16-{i}" for i in range(4)],
    "8 adapters, mixed ranks": [f"mix-{i}" for i in range(8)],
}


def write_adapter(where: Path, rank: int, config: object, seed: int) -> int:
    """A PEFT LoRA adapter with random A and B on every projection; returns its weights' bytes."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(config.num_hidden_layers):
        for module, (n_in, n_out) in module_shapes(config).items():
            block = "self_attn" if module in ATTENTION_MODULES else "mlp"
            key = f"base_model.model.model.layers.{layer}.{block}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, n_in, generator=generator) * 0.02
            tensors[f"{key}.lora_B.weight"] = torch.randn(n_out, rank, generator=generator) * 0.02
    where.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(where / "adapter_model.safetensors"))
    peft_config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(TARGET_MODULES),
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none", "task_type": "CAUSAL_LM",
    }  # fmt: skip
    (where / "adapter_config.json").write_text(json.dumps(peft_config))
    return sum(t.numel() * 4 for t in tensors.values())


async def lora_request(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    ttft = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt(i)}], max_tokens=max_tokens, temperature=0.7,
        seed=i, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens, ttft if ttft is not None else time.perf_counter() - started


async def lora_phase(
    base_url: str, label: str, models: list[str], concurrency: int, max_tokens: int
) -> PhaseResult:
    """`concurrency` requests at once, request i naming models[i % len(models)]."""
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=1200)
    for model in models:  # warm-up: every adapter once, so no phase pays a first load into its slot
        await lora_request(client, model, 999, 2)
    started = time.perf_counter()
    results = await asyncio.gather(
        *[lora_request(client, models[i % len(models)], i, max_tokens) for i in range(concurrency)]
    )
    elapsed = time.perf_counter() - started
    await client.close()
    return PhaseResult(
        label, concurrency, concurrency, sum(t for t, _ in results), elapsed, [t for _, t in results]
    )


def decode_tokens_per_s(result: PhaseResult) -> float:
    """Tokens after each request's first, over the time from the median first token to the end: every
    request starts together and is prefilled in the same step, so this is the decode steps alone."""
    ttft = sorted(result.ttfts)[len(result.ttfts) // 2]
    return (result.tokens - result.requests) / (result.seconds - ttft)


def run(concurrency: int, max_tokens: int, rounds: int) -> None:
    config = AutoConfig.from_pretrained(default_cache_dir() / "llm" / MODEL)
    args = ["--asr", "none", "--embed", "none", "--tts", "none", "--enable-lora-runtime-updates",
            "--max-loras", "8", "--max-lora-rank", str(max(MIXED_RANKS)), "--max-cpu-loras", "12",
            "--max-num-seqs", str(concurrency)]  # fmt: skip
    server = ServerProcess.start(args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rss_before, _ = server.memory_mb()
            sizes: dict[str, int] = {}
            specs = [(f"r16-{i}", 16) for i in range(4)] + [
                (f"mix-{i}", r) for i, r in enumerate(MIXED_RANKS)
            ]
            for seed, (name, rank) in enumerate(specs):
                sizes[name] = write_adapter(Path(tmp) / name, rank, config, seed)
                body = {"lora_name": name, "lora_path": str(Path(tmp) / name)}
                response = requests.post(f"{server.base_url}/v1/load_lora_adapter", json=body, timeout=120)
                response.raise_for_status()
            rss_loaded, _ = server.memory_mb()
            results: dict[str, list[PhaseResult]] = {label: [] for label in WORKLOADS}
            for _ in range(rounds):
                for label, models in WORKLOADS.items():
                    result = asyncio.run(lora_phase(server.base_url, label, models, concurrency, max_tokens))
                    results[label].append(result)
                    print(f"{result.line()}   decode {decode_tokens_per_s(result):6.1f} tok/s", flush=True)
            rss_after, peak = server.memory_mb()
    finally:
        server.stop()
    best = {label: max(decode_tokens_per_s(r) for r in runs) for label, runs in results.items()}
    base = best["base only"]
    print(
        "\nSummary: aggregate decode tok/s (after each request's first token), best of each workload's rounds"
    )
    for label, tps in best.items():
        print(f"  {label:<26} {tps:7.1f} tok/s   {tps / base:.2f}x base")
    per_rank = sizes["r16-0"] / 16
    print(f"  adapter weights (fp32, CPU, all 7 projections): {per_rank / 2**20:.3f} MiB per unit of rank, "
          f"{sizes['r16-0'] / 2**20:.1f} MiB at rank 16, {sizes['mix-7'] / 2**20:.1f} MiB at rank 32")  # fmt: skip
    slots = 8 * max(MIXED_RANKS) * per_rank
    print(
        f"  device slots (8 x rank {max(MIXED_RANKS)}, allocated at the first adapter step): {slots / 2**20:.0f} MiB"
    )
    print(f"  server RSS: {rss_before:.0f} MiB before loading 12 adapters, {rss_loaded:.0f} MiB after "
          f"({(rss_loaded - rss_before) / 12:.1f} MiB each), {rss_after:.0f} MiB after the run, {peak:.0f} MiB peak")  # fmt: skip
