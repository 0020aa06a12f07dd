"""`rtserve serve --ray`: engine replicas on Ray Serve behind the same front end (engine/remote/).

A Ray head is started here with `ray start --head` and the server joins it (the normal way to run), with
two replicas of the embedded LLM and whisper-tiny.en. The cluster tests are marked `ray` (minutes on two
cores): `make test` skips them, `make test-ray` runs them. The first test, no Ray at all, always runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import requests
import websockets

from clients.realtime_client import chunks, pcm16_base64
from clients.server_process import ServerProcess, free_port
from tests.conftest import ARTIFACTS, ROOT, start_server
from tests.speech import synthesize, wer

LLM = "smollm2-135m-instruct"
ASR = "whisper-tiny.en"
SENTENCE = "The quick brown fox jumps over the lazy dog."
# Two replicas that each run two requests at once, and four more may wait for one: the backpressure bound.
SERVER_ARGS = [
    "--replicas", "2", "--replica-cpus", "1", "--asr", ASR, "--embed", "none", "--tts", "none",
    "--max-ongoing-requests", "2", "--max-queued-requests", "4", "--shutdown-timeout", "5",
]  # fmt: skip
RUNNING_AT_ONCE, QUEUE_BOUND = 2 * 2, 4
REPLICA_SERIES = re.compile(r'^(rtserve_\w+)\{replica="([^"]+)"\} (\S+)$', re.MULTILINE)


def test_serve_without_ray_imports_no_ray() -> None:
    """`rtserve serve` builds its app (in-process engine) without importing Ray anywhere."""
    probe = """
import argparse, sys
from server.cli import add_serve_parser, engine_config, server_settings
from server.cli_ray import remote_engine
from server.app import create_app
parser = argparse.ArgumentParser()
add_serve_parser(parser.add_subparsers(dest="command"))
args = parser.parse_args(["serve"])
config = engine_config(args)
engine = remote_engine(args, config)
assert engine is None, engine
create_app(config, settings=server_settings(args), engine=engine)
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


# ---- a Ray head, and a front end with two engine replicas on it ----


@dataclass
class RayHead:
    address: str  # the cluster's GCS address
    env: dict[str, str]  # what processes that join it need: its auth token


@dataclass
class RayServer:
    head: RayHead
    process: ServerProcess  # the front end

    @property
    def base_url(self) -> str:
        return self.process.base_url


def wait_for_port(port: int, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    # Token authentication, as Ray's default: a process joining by address needs the mode and the token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--object-store-memory={200 * 1024**2}",
    ]  # fmt: skip
    with open(ARTIFACTS / "ray_head.log", "w") as log:
        head = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, 120)
        yield RayHead(f"127.0.0.1:{port}", env)
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def start_front_end(head: RayHead, log_name: str) -> ServerProcess:
    return start_server(["--ray", head.address, *SERVER_ARGS], log_name, env=head.env)


@pytest.fixture(scope="module")
def ray_server(ray_head: RayHead) -> Iterator[RayServer]:
    holder = RayServer(ray_head, start_front_end(ray_head, "server_ray.log"))
    try:
        yield holder
    finally:
        holder.process.stop()


def replica_series(base_url: str, name: str) -> dict[str, float]:
    """One /metrics counter per replica: {replica id: value}."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    return {replica: float(v) for metric, replica, v in REPLICA_SERIES.findall(text) if metric == name}


def health(base_url: str) -> dict:
    return requests.get(f"{base_url}/health", timeout=10).json()


def chat_body(content: str, max_tokens: int, stream: bool = False, **extra: object) -> dict:
    return {
        "model": LLM,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


# ---- replicas ----


@pytest.mark.ray
async def test_concurrent_chats_are_served_by_both_replicas(ray_server: RayServer) -> None:
    import openai

    assert health(ray_server.base_url) == {"status": "ok", "replicas": 2, "replicas_wanted": 2}
    name = "rtserve_llm_requests_finished_total"
    before = replica_series(ray_server.base_url, name)
    client = openai.AsyncOpenAI(base_url=f"{ray_server.base_url}/v1", api_key="unused", max_retries=0)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    replies = await asyncio.gather(
        *(client.chat.completions.create(model=LLM, messages=question, max_tokens=16, temperature=0)
          for _ in range(RUNNING_AT_ONCE))
    )  # fmt: skip
    for reply in replies:
        assert "Paris" in (reply.choices[0].message.content or "")
    served: dict[str, float] = {}
    deadline = time.monotonic() + 15  # replicas publish their stats every second
    while time.monotonic() < deadline and sum(served.values()) < RUNNING_AT_ONCE:
        await asyncio.sleep(0.5)
        after = replica_series(ray_server.base_url, name)
        served = {r: v - before.get(r, 0.0) for r, v in after.items()}
    assert sum(served.values()) == RUNNING_AT_ONCE, served
    assert len([r for r, n in served.items() if n > 0]) == 2, f"one replica did all the work: {served}"


@pytest.mark.ray
async def test_greedy_output_matches_the_in_process_engine(ray_server: RayServer) -> None:
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.request import GenerationRequest
    from engine.sampling import SamplingParams

    local = await asyncio.to_thread(Engine.load, EngineConfig(asr=[], embed=[], tts=[], threads=1))
    await local.start()
    try:
        prompt = local.tokenizer.encode("The history of the town goes back")
        params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
        expected: list[int] = []
        async for out in local.generate(GenerationRequest(prompt, params)):
            expected += out.token_ids
    finally:
        await local.stop()
    body = {
        "input_ids": prompt,
        "sampling_params": {"temperature": 0, "max_new_tokens": 32, "ignore_eos": True},
    }
    reply = requests.post(f"{ray_server.base_url}/generate", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert reply.json()["output_ids"] == expected
    assert len(expected) == 32


@pytest.mark.ray
async def test_realtime_transcription_through_the_replicas(ray_server: RayServer) -> None:
    audio = synthesize(SENTENCE)
    ws_url = ray_server.base_url.replace("http", "ws", 1) + "/v1/realtime"
    async with websockets.connect(ws_url) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "model": ASR}))
        deltas, done = await stream_turn(ws, audio)
        second_deltas, second = await stream_turn(ws, audio)  # the next turn on the same session
    assert done["text"] == "".join(deltas)
    assert wer(SENTENCE, done["text"]) < 0.2, done["text"]
    assert wer(SENTENCE, second["text"]) < 0.2, second["text"]
    assert second["text"] == "".join(second_deltas)


async def stream_turn(ws: websockets.ClientConnection, audio: np.ndarray) -> tuple[list[str], dict]:
    """vLLM's realtime dialect: commit, appends, final commit; the deltas and the done event."""
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    for chunk in chunks(audio, 16000, 100):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
        await asyncio.sleep(0.02)
    await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
    deltas: list[str] = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 120))
        assert event["type"] in ("transcription.delta", "transcription.done"), event
        if event["type"] == "transcription.done":
            return deltas, event
        deltas.append(event["delta"])


@pytest.mark.ray
async def test_backpressure_queues_then_answers_503(ray_server: RayServer) -> None:
    """With max_ongoing_requests reached on every replica, requests wait; past the queue bound, a 503."""
    url = f"{ray_server.base_url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:

        async def ask(max_tokens: int) -> tuple[int, dict]:
            body = chat_body("Tell me a long story.", max_tokens, ignore_eos=True)
            async with session.post(url, json=body) as r:
                return r.status, await r.json()

        running = [asyncio.create_task(ask(200)) for _ in range(RUNNING_AT_ONCE)]  # every replica full
        await asyncio.sleep(1.5)
        queued = [asyncio.create_task(ask(16)) for _ in range(QUEUE_BOUND // 2)]  # these wait their turn
        await asyncio.sleep(0.5)
        burst = [asyncio.create_task(ask(16)) for _ in range(QUEUE_BOUND + 4)]  # past the bound
        results = await asyncio.wait_for(asyncio.gather(*running, *queued, *burst), 300)
    first, waited, rest = (
        results[:RUNNING_AT_ONCE],
        results[RUNNING_AT_ONCE : -len(burst)],
        results[-len(burst) :],
    )
    assert all(status == 200 and reply["usage"]["completion_tokens"] == 200 for status, reply in first), first
    assert all(status == 200 and reply["usage"]["completion_tokens"] == 16 for status, reply in waited), (
        waited
    )
    refused = [reply for status, reply in rest if status != 200]
    assert refused, "nothing was refused past the queue bound"
    for status, reply in rest:
        if status == 200:
            continue
        assert status == 503, reply
        error = reply["error"]
        assert error["code"] == "engine_overloaded" and error["type"] == "server_error", error
        assert "try again" in error["message"]


# ---- a replica dies ----


async def read_stream(session: aiohttp.ClientSession, url: str, started: asyncio.Event) -> dict:
    """A streamed chat: {"text", "error" (the error event's body or None), "done"}."""
    text, error, done = "", None, False
    async with session.post(
        url, json=chat_body("Tell me a long story.", 200, stream=True, ignore_eos=True)
    ) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            data = line.decode().strip().removeprefix("data: ")
            if not data:
                continue
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if "error" in event:
                error = event["error"]
                continue
            text += event["choices"][0]["delta"].get("content") or ""
            if len(text) > 20:
                started.set()
    return {"text": text, "error": error, "done": done}


KILL_ONE_REPLICA = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
names = [
    actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
    if actor["namespace"] == "serve" and actor["name"].startswith("SERVE_REPLICA::rtserve#EngineReplica")
]
assert len(names) == 2, names
ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
print(names[0])
"""


def kill_one_replica(head: RayHead) -> str:
    """ray.kill on one replica's actor, the way a crash would end it (from another driver: this test
    process keeps no Ray state)."""
    command = [sys.executable, "-c", KILL_ONE_REPLICA, head.address]
    out = subprocess.run(command, cwd=ROOT, env=head.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


@pytest.mark.ray
async def test_killed_replica_ends_its_streams_with_an_error_and_is_replaced(ray_server: RayServer) -> None:
    url = f"{ray_server.base_url}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        started = [asyncio.Event() for _ in range(RUNNING_AT_ONCE)]  # two on each replica
        streams = [asyncio.create_task(read_stream(session, url, event)) for event in started]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 120)
        # Watch /health from before the kill: Serve may replace the replica before the streams end.
        watcher = asyncio.create_task(wait_for_health(ray_server.base_url, "degraded", 120))
        await asyncio.to_thread(kill_one_replica, ray_server.head)
        results = await asyncio.wait_for(asyncio.gather(*streams), 180)  # none hangs
        # A new request right away is served (by the other replica, or resent to it).
        async with session.post(url, json=chat_body("What is the capital of France?", 16)) as r:
            assert r.status == 200, await r.text()
            assert "Paris" in (await r.json())["choices"][0]["message"]["content"]
    failed = [r for r in results if r["error"] is not None]
    assert len(failed) == 2, results
    for result in failed:
        assert result["error"]["code"] == "engine_unavailable", result["error"]
        assert "replica" in result["error"]["message"]
        assert result["text"]  # it had begun
    assert all(r["done"] and len(r["text"]) > 100 for r in results if r["error"] is None), results
    seen = await watcher
    assert seen["replicas"] == 1 and seen["replicas_wanted"] == 2, seen
    await wait_for_health(ray_server.base_url, "ok", 300)  # Serve started a replacement


async def wait_for_health(base_url: str, status: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    seen: dict = {}
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(health, base_url)
        if seen.get("status") == status:
            return seen
        await asyncio.sleep(0.3)
    raise AssertionError(f"/health never said {status!r} within {timeout_s:.0f}s; last: {seen}")


@pytest.mark.ray
def test_a_restarted_front_end_joins_the_running_replicas(ray_server: RayServer) -> None:
    ray_server.process.stop()
    started = time.monotonic()
    ray_server.process = start_front_end(ray_server.head, "server_ray_restart.log")
    log_path = ray_server.process.log_path
    assert log_path is not None and "joining the running Ray Serve app" in log_path.read_text()
    assert time.monotonic() - started < 120
    reply = requests.post(
        f"{ray_server.base_url}/v1/chat/completions",
        json=chat_body("What is the capital of France?", 16),
        timeout=60,
    )
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]
    assert health(ray_server.base_url)["status"] == "ok"
