"""`python -m clients.bench_llm --constrained`: aggregate decode tok/s at concurrency 32 with every request
under a 6-field JSON schema, against the same requests unconstrained, side by side in one server and one run
(alternating rounds), and the schema's grammar compile time, cold and cached.

The schema's `tags` array has minItems 40, so every constrained reply is still inside the grammar when
max_tokens cuts it off: each of its tokens pays for a mask, as the unconstrained ones pay for none.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

from clients.bench_llm import MODEL, PhaseResult, phase
from clients.server_process import ServerProcess

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "maxLength": 40},
        "email": {"type": "string", "maxLength": 60},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 40},
    },
    "required": ["name", "age", "city", "email", "active", "tags"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}


def compile_times(repeats: int = 5) -> tuple[float, float, float]:
    """(tokenizer wrap s, cold compile ms, cached compile ms) for SCHEMA on the embedded tokenizer."""
    from engine.config import default_cache_dir
    from engine.llm.grammar.compiler import GrammarCompiler
    from engine.models.llm_loader import load_llm
    from engine.structured_output import StructuredOutput

    bundle = load_llm(MODEL, default_cache_dir(), "cpu")
    started = time.perf_counter()
    compiler = GrammarCompiler(bundle.tokenizer, bundle.model.config.vocab_size, bundle.eos_token_ids)
    _ = compiler.tokenizer
    wrap = time.perf_counter() - started
    spec = json.dumps(SCHEMA, separators=(",", ":"))
    started = time.perf_counter()
    compiler.compile(StructuredOutput("json_schema", spec))
    cold = (time.perf_counter() - started) * 1000
    cached = []
    for _ in range(repeats):
        started = time.perf_counter()
        compiler.compile(StructuredOutput("json_schema", spec))
        cached.append((time.perf_counter() - started) * 1000)
    return wrap, cold, statistics.median(cached)


def run(concurrency: int, max_tokens: int, rounds: int) -> None:
    wrap, cold, cached = compile_times()
    server = ServerProcess.start(["--asr", "none", "--tts", "none", "--embed", "none"])
    free: list[PhaseResult] = []
    constrained: list[PhaseResult] = []
    try:
        for _ in range(rounds):
            free.append(
                asyncio.run(phase(server.base_url, "unconstrained", concurrency, concurrency, max_tokens))
            )
            print(free[-1].line(), flush=True)
            extra = {"response_format": RESPONSE_FORMAT}
            constrained.append(
                asyncio.run(
                    phase(
                        server.base_url, "json_schema (6 fields)", concurrency, concurrency, max_tokens, extra
                    )
                )
            )
            print(constrained[-1].line(), flush=True)
    finally:
        server.stop()
    free_tps = sum(r.tokens for r in free) / sum(r.seconds for r in free)
    constrained_tps = sum(r.tokens for r in constrained) / sum(r.seconds for r in constrained)
    print("\nSummary")
    print(f"  concurrency {concurrency}, {max_tokens} tokens each, {rounds} alternating rounds")
    print(f"  unconstrained {free_tps:.1f} tok/s, json_schema {constrained_tps:.1f} tok/s: "
          f"constrained/unconstrained = {constrained_tps / free_tps:.2f}x (target >= 0.9x)")  # fmt: skip
    print(f"  grammar compile of the schema: cold {cold:.1f} ms, cached {cached * 1000:.1f} us "
          f"(wrapping the tokenizer, once per server start: {wrap:.2f} s)")  # fmt: skip
