"""Ray Serve engine replicas (`rtserve serve --ray`) against the in-process engine, side by side in one run.

For each mode a server is started here with the same models (the embedded LLM and whisper-tiny.en) and
the same torch threads per engine; then, through the benchmarks' own clients (clients/bench_llm.py,
clients/bench_realtime.py):
  idle memory     RSS of the server's whole process tree (the front end, and with --ray the Ray head,
                  the Serve controller and the replicas), after startup with nothing running
  per token       streamed chat at concurrency 1: milliseconds between tokens after the first; the
                  difference to in-process is what the handle costs per streamed token
  aggregate       streamed chat at concurrency 8: tokens/s and TTFT
  realtime        N live sessions (vLLM dialect) at real-time pace: final-transcript latency p50/p95

    python -m clients.bench_ray                                   # inproc, ray x1, ray x2
    python -m clients.bench_ray --modes inproc,ray1 --requests 4 --sessions 1,4
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import psutil

from clients.bench_llm import PhaseResult, phase
from clients.bench_realtime import LevelResult, load_utterances, run_level
from clients.server_process import ServerProcess

COMMON = ["--asr", "whisper-tiny.en", "--embed", "none", "--tts", "none", "--log-level", "warning"]
MODES: dict[str, list[str]] = {
    "inproc": [],
    "ray1": ["--ray", "--replicas", "1"],
    "ray2": ["--ray", "--replicas", "2"],
}


@dataclass
class ModeResult:
    mode: str
    idle_mb: float
    processes: int
    single: PhaseResult
    aggregate: PhaseResult
    realtime: list[LevelResult]

    @property
    def ms_per_token(self) -> float:
        """Decode time per streamed token after the first, at concurrency 1."""
        decode_s = self.single.seconds - sum(self.single.ttfts)
        return 1000 * decode_s / max(1, self.single.tokens - self.single.requests)


def tree_rss_mb(pid: int) -> tuple[float, int]:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1024**2, len(procs)


async def bench_mode(mode: str, args: argparse.Namespace, utterances: list) -> ModeResult:
    extra = MODES[mode] + (["--replica-cpus", str(args.threads)] if mode != "inproc" else [])
    server = ServerProcess.start([*COMMON, "--threads", str(args.threads), *extra])
    try:
        await asyncio.sleep(args.settle)
        idle_mb, processes = tree_rss_mb(server.proc.pid)
        single = await phase(server.base_url, mode, 1, args.requests, args.max_tokens)
        aggregate = await phase(
            server.base_url, mode, args.concurrency, 2 * args.concurrency, args.max_tokens
        )
        ws_url = server.base_url.replace("http", "ws", 1)
        levels = [await run_level(ws_url, n, utterances, args.utterances) for n in args.sessions]
    finally:
        server.stop()
    return ModeResult(mode, idle_mb, processes, single, aggregate, levels)


def report(results: list[ModeResult], args: argparse.Namespace) -> None:
    base = results[0]
    print(f"\n{'mode':<8} {'idle MB':>8} {'procs':>5} {'ms/token':>9} {'+ms/token':>9} "
          f"{f'tok/s@{args.concurrency}':>10} {'TTFT p50':>9}  realtime final p50/p95 (s) by sessions")  # fmt: skip
    for r in results:
        ttft = sorted(r.aggregate.ttfts)[len(r.aggregate.ttfts) // 2] * 1000
        live = "  ".join(f"{lv.sessions}: {lv.final_p50:.2f}/{lv.final_p95:.2f}" for lv in r.realtime)
        print(f"{r.mode:<8} {r.idle_mb:8.0f} {r.processes:5d} {r.ms_per_token:9.2f} "
              f"{r.ms_per_token - base.ms_per_token:+9.2f} {r.aggregate.tokens_per_s:10.1f} {ttft:7.0f}ms  {live}")  # fmt: skip
    for r in results[1:]:
        print(f"{r.mode} vs {base.mode}: per-token x{r.ms_per_token / base.ms_per_token:.2f}, "
              f"aggregate x{r.aggregate.tokens_per_s / base.aggregate.tokens_per_s:.2f}, "
              f"idle memory +{r.idle_mb - base.idle_mb:.0f} MB")  # fmt: skip


async def run(args: argparse.Namespace) -> None:
    utterances = load_utterances()
    results = []
    for mode in args.modes:
        started = time.monotonic()
        results.append(await bench_mode(mode, args, utterances))
        r = results[-1]
        print(f"{mode}: done in {time.monotonic() - started:.0f}s: idle {r.idle_mb:.0f} MB in {r.processes} "
              f"processes, {r.ms_per_token:.2f} ms/token, {r.aggregate.line()}", flush=True)  # fmt: skip
    report(results, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="inproc,ray1,ray2")
    p.add_argument("--threads", type=int, default=1, help="torch threads per engine (and CPUs per replica)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=6, help="sequential requests at concurrency 1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    p.add_argument("--utterances", type=int, default=2, help="utterances per live session")
    p.add_argument("--settle", type=float, default=5.0, help="seconds idle before memory is read")
    args = p.parse_args()
    unknown = set(args.modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes: {sorted(unknown)}; choose from {sorted(MODES)}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
