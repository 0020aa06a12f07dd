"""Realtime capacity benchmark: N live sessions speaking at real-time pace, with and without batching.

    python -m clients.bench_realtime                       # both modes, ladder 1,2,4,6,8,12,16,24,32
    python -m clients.bench_realtime --sessions 1,4,8 --utterances 2
    python -m clients.bench_realtime --url http://127.0.0.1:8000   # one run against a running server
    python -m clients.bench_realtime captions --sessions 1,4,8,16  # live-caption latency, old vs new policy

Each session speaks vLLM's dialect: per utterance `commit`, appends at real time, `commit {final: true}`
at the end of speech, then a pause. Measured per session and utterance:
  final latency  commit(final) -> transcription.done (the end of speech is known to the client here)
  word latency   a word's end in the audio -> the first delta that contains it (word ends are estimated
                 by spreading the utterance's words evenly over its speech)
Capacity = the largest N whose p95 final latency stays under 1 s with every transcript correct.
"batched" runs the engine as served (cross-session Whisper batches, up to 16 windows); "unbatched" is the
same model with --max-asr-batch 1: one window per forward pass, as per-session servers (WhisperLive,
speaches) run it. Each mode gets its own server process, started by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients.realtime_client import VLLM_RATE, paced, pcm16_base64
from clients.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I would like a cup of coffee please.",
    "Tomorrow it will rain in the morning.",
    "My sister plays the piano every evening.",
    "The train to London leaves at nine o'clock.",
    "Please close the window before you leave.",
    "We planted tomatoes and beans in the garden.",
    "The library is open until six on Saturdays.",
]
PAUSE_S = 1.0
TARGET_P95_S = 1.0


@dataclass
class Utterance:
    text: str
    audio: np.ndarray
    speech_start: float  # seconds into the audio where speech begins / ends (energy based)
    speech_end: float


@dataclass
class SessionResult:
    final_latencies: list[float] = field(default_factory=list)
    word_latencies: list[float] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    frame = VLLM_RATE // 100
    energy = np.array([np.abs(audio[i : i + frame]).max() for i in range(0, len(audio) - frame, frame)])
    voiced = np.nonzero(energy > 0.02)[0]
    if not len(voiced):
        return 0.0, len(audio) / VLLM_RATE
    return voiced[0] * frame / VLLM_RATE, (voiced[-1] + 1) * frame / VLLM_RATE


def load_utterances() -> list[Utterance]:
    try:
        from tests.speech import synthesize
    except ImportError as exc:
        raise SystemExit(
            f"the benchmark synthesizes its speech with tests/speech.py (piper): {exc}"
        ) from None
    out = []
    for text in SENTENCES:
        audio = np.asarray(synthesize(text, VLLM_RATE), dtype=np.float32)
        start, end = speech_bounds(audio)
        out.append(Utterance(text, audio, start, end))
    return out


def word_error_rate(reference: str, hypothesis: str) -> float:
    from tests.speech import wer

    return wer(reference, hypothesis)


async def run_session(url: str, utterances: list[Utterance], delay: float) -> SessionResult:
    import websockets

    result = SessionResult()
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    async with websockets.connect(url + "/v1/realtime", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "session.update", "model": None}))
        commits: asyncio.Queue[tuple[Utterance, float, float]] = asyncio.Queue()

        async def send() -> None:
            for utt in utterances:
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                t0 = loop.time()
                async for chunk in paced(utt.audio, VLLM_RATE, 1.0, chunk_ms=100):
                    await ws.send(
                        json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)})
                    )
                await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
                commits.put_nowait((utt, t0, loop.time()))
                await asyncio.sleep(PAUSE_S)

        sender = asyncio.create_task(send())
        try:
            for _ in utterances:
                seen_words = 0
                word_times: list[float] = []
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    now = loop.time()
                    if event["type"] == "transcription.delta":
                        new = len(event["delta"].split())
                        word_times += [now] * new
                        seen_words += new
                    elif event["type"] == "transcription.done":
                        break
                    elif event["type"] == "error":
                        result.errors.append(event.get("error", ""))
                utt, t0, t_commit = await commits.get()
                result.final_latencies.append(now - t_commit)
                result.transcripts.append(event["text"])
                words = utt.text.split()
                got = event["text"].split()
                word_times += [now] * max(0, len(got) - len(word_times))
                duration = utt.speech_end - utt.speech_start
                for i in range(min(len(words), len(word_times))):
                    spoken = t0 + utt.speech_start + duration * (i + 1) / len(words)
                    result.word_latencies.append(word_times[i] - spoken)
                if result.errors:
                    break
        finally:
            sender.cancel()
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.array(values), q))


@dataclass
class LevelResult:
    sessions: int
    final_p50: float
    final_p95: float
    word_p50: float
    word_p95: float
    max_wer: float
    errors: int

    @property
    def ok(self) -> bool:
        return self.final_p95 < TARGET_P95_S and self.errors == 0 and self.max_wer <= 0.25


async def run_level(url: str, n: int, utterances: list[Utterance], per_session: int) -> LevelResult:
    rng = random.Random(n)
    jobs = []
    for i in range(n):
        picks = [utterances[(i + k) % len(utterances)] for k in range(per_session)]
        jobs.append(run_session(url, picks, rng.uniform(0, 1.0)))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    finals, words, wers, errors = [], [], [0.0], 0
    for i, res in enumerate(results):
        if isinstance(res, BaseException):
            errors += 1
            print(f"    session {i} failed: {res!r}", file=sys.stderr)
            continue
        errors += len(res.errors)
        finals += res.final_latencies
        words += res.word_latencies
        for k, text in enumerate(res.transcripts):
            reference = utterances[(i + k) % len(utterances)].text
            wers.append(word_error_rate(reference, text))
            if wers[-1] > 0:
                print(f"    session {i}: {text!r} for {reference!r} (WER {wers[-1]:.2f})", file=sys.stderr)
    return LevelResult(n, pct(finals, 50), pct(finals, 95), pct(words, 50), pct(words, 95), max(wers), errors)


def start_server(
    model: str, max_asr_batch: int, threads: int | None, asr_quantize: str, policy: str = "live"
) -> ServerProcess:
    args = ["--model", model, "--max-asr-batch", str(max_asr_batch), "--asr-quantize", asr_quantize]
    args += ["--policy", policy]
    if threads:
        args += ["--threads", str(threads)]
    (ROOT / "artifacts").mkdir(exist_ok=True)
    tag = "".join(c if c.isalnum() else "_" for c in policy)
    log_path = ROOT / "artifacts" / f"bench_server_b{max_asr_batch}_{tag}.log"
    return ServerProcess.start(
        args, command=("clients.bench_realtime", "serve"), log_path=log_path, timeout_s=600
    )


def serve(args: argparse.Namespace) -> None:
    """The server a mode runs against: the normal app, ASR only, with this --max-asr-batch."""
    import logging

    from aiohttp import web

    from engine.config import EngineConfig
    from realtime.limits import RealtimeLimits
    from realtime.routes import STREAMING_KEY
    from realtime.session import StreamingSettings
    from server.app import create_app
    from server.settings import ServerSettings

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("realtime.transcriber").setLevel(logging.DEBUG)  # early-word counts per turn
    name, _, overrides = args.policy.partition(":")
    legacy = name == "legacy"
    order = "fifo" if legacy or "preview_order=fifo" in overrides else "fair"  # the ASR scheduler's
    overrides = overrides.replace("preview_order=fifo", "").replace("preview_order=fair", "")
    config = EngineConfig(
        llm=None, asr=[args.model], max_asr_batch=args.max_asr_batch, threads=args.threads,
        asr_quantize=args.asr_quantize, preview_order=order,
    )  # fmt: skip
    settings = ServerSettings(realtime=RealtimeLimits(max_sessions=1024, max_buffered_audio_seconds=600.0))
    app = create_app(config, settings=settings)
    streaming = StreamingSettings.legacy() if legacy else StreamingSettings()
    for pair in [p for p in overrides.split(";") if p]:  # "live:confident_hold_back=0;..." (trials)
        key, _, value = pair.partition("=")
        setattr(streaming, key, type(getattr(streaming, key))(value))
    app[STREAMING_KEY] = streaming
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


async def ladder(
    url: str, levels: list[int], utterances: list[Utterance], per_session: int
) -> list[LevelResult]:
    out: list[LevelResult] = []
    await run_level(url, 1, utterances, 1)  # warm-up: first decodes pay for allocation
    for n in levels:
        res = await run_level(url, n, utterances, per_session)
        out.append(res)
        print(
            f"  N={n:3d}  final p50 {res.final_p50:6.3f}s p95 {res.final_p95:6.3f}s | word p50 {res.word_p50:6.3f}s "
            f"p95 {res.word_p95:6.3f}s | max WER {res.max_wer:.2f} errors {res.errors}  {'ok' if res.ok else 'OVER'}",
            flush=True,
        )
        if not res.ok:
            break
    return out


def capacity(results: list[LevelResult]) -> int:
    best = 0
    for res in results:
        if not res.ok:
            break
        best = res.sessions
    return best


def captions(argv: list[str]) -> None:
    """Live-caption latency (clients/bench_captions.py): each policy gets its own server, the same levels."""
    from clients.bench_captions import __doc__ as workload
    from clients.bench_captions import run_captions

    p = argparse.ArgumentParser(
        prog="bench_realtime captions", description=workload,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--sessions", default="1,4,8,16", help="session counts, in order")
    p.add_argument("--policies", default="legacy,live", help="legacy (the old streaming policy) and/or live")
    p.add_argument("--threads", type=int, default=None, help="server torch threads")
    p.add_argument("--asr-quantize", choices=["none", "int8"], default="none")
    args = p.parse_args(argv)
    policies = [x for x in args.policies.split(",") if x]
    print(
        f"model {args.model}; 4 sentences per session, 1.5 s gaps, server VAD 500 ms; cores {os.cpu_count()}"
    )
    servers: dict[str, ServerProcess] = {}
    try:
        for policy in policies:
            servers[policy] = start_server(args.model, 16, args.threads, args.asr_quantize, policy)
        run_captions([int(x) for x in args.sessions.split(",")], policies, servers)
    finally:
        for server in servers.values():
            server.stop()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        p = argparse.ArgumentParser(prog="bench_realtime serve")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--model", default="whisper-tiny.en")
        p.add_argument("--max-asr-batch", type=int, default=16)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--asr-quantize", choices=["none", "int8"], default="none")
        p.add_argument("--policy", default="live", help="live or legacy, then :FIELD=VALUE;... to try others")
        serve(p.parse_args(argv[1:]))
        return
    if argv and argv[0] == "captions":
        captions(argv[1:])
        return
    p = argparse.ArgumentParser(
        prog="bench_realtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--sessions", default="1,2,4,6,8,12,16,24,32", help="session counts to try, in order")
    p.add_argument("--utterances", type=int, default=3, help="utterances per session per level")
    p.add_argument(
        "--modes", default="batched,unbatched", help="batched (max_asr_batch 16) and/or unbatched (1)"
    )
    p.add_argument("--threads", type=int, default=None, help="server torch threads")
    p.add_argument(
        "--asr-quantize",
        choices=["none", "int8"],
        default="none",
        help="both servers' Whisper (encoder MLP and vocabulary projection)",
    )
    p.add_argument("--url", help="bench a running server instead (one mode, as it is configured)")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.sessions.split(",")]
    utterances = load_utterances()
    (ROOT / "artifacts").mkdir(exist_ok=True)
    print(
        f"model {args.model}; {args.utterances} utterances per session at real-time pace; cpu cores {os.cpu_count()}"
    )
    summary: dict[str, int] = {}
    modes = {"batched": 16, "unbatched": 1}
    if args.url:
        ws_url = args.url.replace("http", "ws", 1)
        summary["server"] = capacity(asyncio.run(ladder(ws_url, levels, utterances, args.utterances)))
    for mode in [m for m in args.modes.split(",") if m and not args.url]:
        print(f"{mode} (max_asr_batch={modes[mode]}):", flush=True)
        server = start_server(args.model, modes[mode], args.threads, args.asr_quantize)
        try:
            ws_url = server.base_url.replace("http", "ws", 1)
            results = asyncio.run(ladder(ws_url, levels, utterances, args.utterances))
        finally:
            server.stop()
        summary[mode] = capacity(results)
    print("capacity (largest N with p95 final latency < 1 s):")
    for mode, n in summary.items():
        print(f"  {mode:10s} {n}")
    if summary.get("unbatched"):
        print(f"  batched / unbatched = {summary.get('batched', 0) / summary['unbatched']:.1f}x")
    elif "unbatched" in summary:
        print("  unbatched could not hold even one session under 1 s")


if __name__ == "__main__":
    main()
