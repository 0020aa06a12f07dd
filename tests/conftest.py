"""Shared fixtures: one live server for the whole session, the openai client, and helpers.

Set RTSERVE_TEST_URL=http://127.0.0.1:PORT to reuse a server you already started
(`rtserve serve --asr whisper-tiny.en,whisper-base --port PORT`) while iterating.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SERVER_START_TIMEOUT_S = 900


@dataclass
class LiveServer:
    base_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    api_key: str | None
    log_path: Path | None

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen | None, log_path: Path | None) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path else ""
            raise RuntimeError(f"server exited with {proc.returncode} while starting:\n{tail}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server at {url} not healthy after {SERVER_START_TIMEOUT_S}s")


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    reuse = os.environ.get("RTSERVE_TEST_URL")
    if reuse:
        _wait_healthy(reuse, None, None)
        yield LiveServer(reuse, reuse.replace("http", "ws", 1), os.environ.get("RTSERVE_TEST_API_KEY"), None)
        return
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    log_path = ARTIFACTS / "server.log"
    cmd = [
        sys.executable, "-m", "http_api.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--asr", "whisper-tiny.en,whisper-base",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield LiveServer(url, f"ws://127.0.0.1:{port}", None, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def openai_client(server: LiveServer):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key or "unused", max_retries=0)


@pytest.fixture(scope="session")
def async_openai_client(server: LiveServer):
    import openai

    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=server.api_key or "unused", max_retries=0
    )
