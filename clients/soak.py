"""A bounded, reproducible soak of a local rtserve (not part of `make test`).

N realtime sessions churn on /v1/realtime -- connect, stream real speech at real-time pace, drop some turns
midway (with or without a close frame), reconnect -- next to chat streams that are abandoned after a few
chunks, for M minutes. It prints the engine's LLM sequences, KV blocks and ASR windows, the open realtime
sessions and the server's TCP connections, and the server's RSS: before (after a warm-up), every ~30 s, the
peak, and after (the load stopped and the server idled 15 s); then a verdict. Exit status 1 on a leak.

    python -m clients.soak --sessions 50 --minutes 10 [--url http://127.0.0.1:8000]

Without --url it starts its own server (log: artifacts/soak-server.log) and can read its RSS. The speech is
synthesized once with piper through tests/speech.py (a checkout with the test extras).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import websockets

from clients.realtime_client import chunks, pcm16_base64
from clients.server_process import ROOT, ServerProcess

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "I would like a cup of coffee with milk, please.",
    "Tomorrow the weather will be sunny with a light breeze from the west.",
)
RATE = 16000  # both dialects are sent 16 kHz PCM16
CHUNK_MS = 100
REPORT_EVERY_S = 30.0
SAMPLE_EVERY_S = 2.0
IDLE_S = 15.0
TURN_TIMEOUT_S = 60.0
DROP_P = 0.3  # share of turns dropped midway
GAUGES = {  # column: /metrics name
    "seq_running": "rtserve_llm_requests_running",
    "seq_waiting": "rtserve_llm_requests_waiting",
    "kv_used": "rtserve_kv_cache_blocks_used",
    "asr_waiting": "rtserve_asr_windows_waiting",
    "asr_running": "rtserve_asr_windows_running",
}
SESSIONS_METRIC = "rtserve_realtime_sessions"  # used when the server exports it; else the soak's own count
COLUMNS = ("sessions", "connections", *GAUGES, "rss_mb")
MUST_RETURN_TO_ZERO = ("sessions", "connections", *GAUGES)
FINAL_EVENTS = {"transcription.done", "conversation.item.input_audio_transcription.completed"}

LEGEND = (
    "sessions: the server's rtserve_realtime_sessions if it exports it, else the soak's open sockets; "
    "connections: TCP connections the server holds on its port; rss_mb: only for a server the soak started"
)
Snapshot = dict[str, float | None]


@dataclass
class Soak:
    url: str
    headers: dict[str, str]
    asr_model: str
    llm: str | None
    speech: list[np.ndarray]
    server: ServerProcess | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    open_sessions: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


# ---- what the server says ----


def get_text(url: str, headers: dict[str, str], body: dict | None = None) -> str:
    """GET `url`, or POST `body` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {**headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


def server_connections(port: int) -> int:
    """TCP connections the server holds (established, or closed by the peer but not by the server) on its port."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] in ("01", "08") and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def snapshot(soak: Soak) -> Snapshot:
    connections = float(server_connections(urlsplit(soak.url).port or 80))  # before our own /metrics call
    text = await asyncio.to_thread(get_text, f"{soak.url}/metrics", soak.headers)
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }
    snap: Snapshot = {column: values.get(name) for column, name in GAUGES.items()}
    snap["sessions"] = values.get(SESSIONS_METRIC, float(soak.open_sessions))
    snap["connections"] = connections
    snap["rss_mb"] = soak.server.memory_mb()[0] if soak.server else None
    return snap


def row(label: str, snap: Snapshot) -> str:
    cells = ("-" if snap.get(c) is None else f"{snap[c]:.0f}" for c in COLUMNS)
    return f"{label:>8} " + " ".join(f"{cell:>11}" for cell in cells)


async def wait_idle(soak: Soak, timeout_s: float) -> Snapshot:
    deadline = time.monotonic() + timeout_s
    while True:
        snap = await snapshot(soak)
        if all(not snap[c] for c in GAUGES) or time.monotonic() > deadline:
            return snap
        await asyncio.sleep(0.5)


# ---- load: realtime sessions ----


async def stream(ws: websockets.ClientConnection, audio: np.ndarray) -> None:
    """Append `audio` in 100 ms events at real-time pace."""
    start = time.monotonic()
    for i, chunk in enumerate(chunks(audio, RATE, CHUNK_MS)):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
        await asyncio.sleep(max(0.0, start + (i + 1) * CHUNK_MS / 1000 - time.monotonic()))


def setup_event(soak: Soak, dialect: str) -> dict:
    if dialect == "vllm":
        return {"type": "session.update", "model": soak.asr_model}
    audio_input = {
        "format": {"type": "audio/pcm", "rate": RATE},
        "transcription": {"model": soak.asr_model},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
    }
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}


async def read_events(soak: Soak, ws: websockets.ClientConnection, finals: asyncio.Queue[dict]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            event = json.loads(message)
            if event["type"] in FINAL_EVENTS:
                finals.put_nowait(event)
            elif event["type"] == "error":
                error = event["error"]
                soak.count(f"error event {error['code'] if isinstance(error, dict) else event.get('code')}")


async def turns(
    soak: Soak, ws: websockets.ClientConnection, rng: random.Random, dialect: str, drop_p: float
) -> None:
    """1-3 turns on one connection; a dropped turn ends the connection (half of them with no close frame)."""
    finals: asyncio.Queue[dict] = asyncio.Queue()
    reader = asyncio.create_task(read_events(soak, ws, finals))
    try:
        await ws.send(json.dumps(setup_event(soak, dialect)))
        for _ in range(rng.randint(1, 3)):
            audio = rng.choice(soak.speech)
            if dialect == "vllm":
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            if rng.random() < drop_p:
                await stream(ws, audio[: rng.randint(RATE // 2, len(audio))])
                soak.count("turns dropped midway")
                if rng.random() < 0.5:
                    ws.transport.abort()
                return
            await stream(
                ws, audio if dialect == "vllm" else np.concatenate([audio, np.zeros(RATE, np.float32)])
            )
            if dialect == "vllm":
                await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
            await asyncio.wait_for(finals.get(), TURN_TIMEOUT_S)
            soak.count("turns transcribed")
            if soak.stop.is_set():
                return
    finally:
        reader.cancel()


async def one_connection(soak: Soak, rng: random.Random, dialect: str, drop_p: float = DROP_P) -> None:
    query = "" if dialect == "vllm" else "?intent=transcription"
    url = soak.url.replace("http", "ws", 1) + "/v1/realtime" + query
    async with websockets.connect(url, additional_headers=soak.headers, compression=None) as ws:
        soak.open_sessions += 1
        try:
            await turns(soak, ws, rng, dialect, drop_p)
        finally:
            soak.open_sessions -= 1


async def session_worker(soak: Soak, index: int) -> None:
    rng = random.Random(index)  # the same churn on every run
    dialect = "vllm" if index % 2 == 0 else "openai"
    while not soak.stop.is_set():
        try:
            await one_connection(soak, rng, dialect)
        except (OSError, TimeoutError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            soak.count(f"session failed: {type(exc).__name__}")
        await asyncio.sleep(rng.uniform(0.2, 1.0))


# ---- load: abandoned chat streams ----


async def chat_worker(soak: Soak, index: int) -> None:
    rng = random.Random(10_000 + index)
    async with aiohttp.ClientSession(headers=soak.headers) as http:
        while not soak.stop.is_set():
            ask = [{"role": "user", "content": f"Tell me a long story about {rng.choice(SENTENCES)}"}]
            body = {"model": soak.llm, "messages": ask, "max_tokens": 256, "stream": True}
            try:
                async with http.post(f"{soak.url}/v1/chat/completions", json=body) as response:
                    for _ in range(rng.randint(2, 8)):
                        if not await response.content.readline():
                            break
                    response.close()  # drop the connection mid-stream
                soak.count("chat streams abandoned")
            except aiohttp.ClientError as exc:
                soak.count(f"chat failed: {type(exc).__name__}")
            await asyncio.sleep(rng.uniform(0.2, 1.5))


# ---- the run ----


async def monitor(soak: Soak, started: float, peak: Snapshot) -> None:
    """Sample every 2 s for the peak; print a row every ~30 s."""
    printed = started
    while not soak.stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(soak.stop.wait(), SAMPLE_EVERY_S)
        snap = await snapshot(soak)
        for column, value in snap.items():
            if value is not None and value > (peak.get(column) or 0):
                peak[column] = value
        if time.monotonic() - printed >= REPORT_EVERY_S or soak.stop.is_set():
            printed = time.monotonic()
            print(row(f"{printed - started:.0f}s", snap), flush=True)


async def prepare(args: argparse.Namespace, server: ServerProcess | None) -> Soak:
    from tests.speech import synthesize  # piper: the test extras

    url = (args.url or server.base_url).rstrip("/")  # type: ignore[union-attr]
    key = args.api_key or os.environ.get("RTSERVE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    models = [m["id"] for m in json.loads(get_text(f"{url}/v1/models", headers))["data"]]
    asr = args.asr or next(m for m in models if m.startswith("whisper"))
    llm = next((m for m in models if not m.startswith("whisper")), None)
    speech = [await asyncio.to_thread(synthesize, text, RATE) for text in SENTENCES]
    return Soak(url, headers, asr, llm, speech, server)


async def run(args: argparse.Namespace, server: ServerProcess | None) -> bool:
    """The soak; True when nothing leaked."""
    soak = await prepare(args, server)
    for dialect in ("vllm", "openai"):  # warm-up: one full turn each, and a chat
        await one_connection(soak, random.Random(0), dialect, drop_p=0.0)
    if soak.llm:
        chat = {"model": soak.llm, "messages": [{"role": "user", "content": SENTENCES[0]}], "max_tokens": 32}
        await asyncio.to_thread(get_text, f"{soak.url}/v1/chat/completions", soak.headers, chat)
    before = await wait_idle(soak, 60)
    print(LEGEND + "\n" + f"{'':>8} " + " ".join(f"{c:>11}" for c in COLUMNS))
    print(row("before", before), flush=True)
    started, peak = time.monotonic(), dict(before)
    workers = [session_worker(soak, i) for i in range(args.sessions)]
    workers += [chat_worker(soak, i) for i in range(args.chats if soak.llm else 0)]
    tasks = [asyncio.create_task(w) for w in workers]
    reporter = asyncio.create_task(monitor(soak, started, peak))
    await asyncio.sleep(args.minutes * 60)
    soak.stop.set()
    _, pending = await asyncio.wait(tasks, timeout=TURN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await reporter
    await asyncio.sleep(IDLE_S)
    after = await snapshot(soak)
    print("\n" + "\n".join([row("before", before), row("peak", peak), row("after", after)]))
    print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items())))
    leaked = [c for c in MUST_RETURN_TO_ZERO if after.get(c)]
    if before["rss_mb"] and after["rss_mb"]:
        print(f"RSS: {before['rss_mb']:.0f} -> peak {peak['rss_mb']:.0f} -> {after['rss_mb']:.0f} MiB idle")
    print(f"leaked: {', '.join(leaked)}" if leaked else "leaked: nothing (sequences, KV blocks, sessions: 0)")
    return not leaked


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m clients.soak", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=50, help="realtime sessions churning at once (1-400)")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (at most 120)")
    p.add_argument(
        "--chats", type=int, default=None, help="abandoned chat streams at once (default sessions/5)"
    )
    p.add_argument("--url", help="a running server on 127.0.0.1 (default: start one)")
    p.add_argument("--asr", help="speech model (default: the server's first; with no --url: whisper-tiny.en)")
    p.add_argument("--api-key", help="the server's key (env RTSERVE_API_KEY)")
    args = p.parse_args(argv)
    if not (1 <= args.sessions <= 400 and 0 < args.minutes <= 120):
        p.error("--sessions must be 1-400 and --minutes 0-120")
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        p.error("--url must be a server on 127.0.0.1")
    args.chats = max(1, args.sessions // 5) if args.chats is None else args.chats
    server = None
    if not args.url:
        (ROOT / "artifacts").mkdir(exist_ok=True)
        args.asr = args.asr or "whisper-tiny.en"
        flags = ["--host", "127.0.0.1", "--asr", args.asr, "--max-sessions", str(args.sessions + 8)]
        server = ServerProcess.start(flags, log_path=ROOT / "artifacts" / "soak-server.log")
    try:
        ok = asyncio.run(run(args, server))
    finally:
        if server is not None:
            server.stop()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
