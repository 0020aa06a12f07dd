"""Shared fixtures: one live server for the whole session, the openai client, and helpers.

Set RTSERVE_TEST_URL=http://127.0.0.1:PORT to reuse a server you already started
(`rtserve serve --asr whisper-tiny.en,whisper-base --port PORT`) while iterating.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from clients.server_process import ServerProcess
from tests.vlm_models import idefics3_dir, llava_dir, qwen2_5_vl_dir, qwen2_vl_dir  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


@dataclass
class LiveServer:
    base_url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT
    api_key: str | None
    process: ServerProcess | None  # None when reusing RTSERVE_TEST_URL

    def log_tail(self, chars: int = 4000) -> str:
        return self.process.log_tail(chars) if self.process else ""


def metric(text: str, name: str) -> float:
    """One value from a /metrics page."""
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def start_server(args: list[str], log_name: str, env: dict[str, str] | None = None) -> ServerProcess:
    ARTIFACTS.mkdir(exist_ok=True)
    return ServerProcess.start(["--host", "127.0.0.1", *args], log_path=ARTIFACTS / log_name, env=env)


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    reuse = os.environ.get("RTSERVE_TEST_URL")
    if reuse:
        deadline = time.monotonic() + 60
        while requests.get(f"{reuse}/health", timeout=2).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        yield LiveServer(reuse, reuse.replace("http", "ws", 1), os.environ.get("RTSERVE_TEST_API_KEY"), None)
        return
    process = start_server(["--asr", "whisper-tiny.en,whisper-base"], "server.log")
    try:
        yield LiveServer(process.base_url, process.base_url.replace("http", "ws", 1), None, process)
    finally:
        process.stop()


# The embedded model's template with Qwen3's thinking switch (a --chat-template given inline): with
# enable_thinking false the generation prompt holds an empty, closed think block.
THINKING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)


@pytest.fixture(scope="session")
def reasoning_server() -> Iterator[LiveServer]:
    """The LLM alone, with --reasoning-parser qwen3 and THINKING_TEMPLATE (tests/test_reasoning.py)."""
    args = ["--asr", "none", "--embed", "none", "--tts", "none", "--reasoning-parser", "qwen3"]
    process = start_server([*args, "--chat-template", THINKING_TEMPLATE], "server_reasoning.log")
    try:
        yield LiveServer(process.base_url, process.base_url.replace("http", "ws", 1), None, process)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def http(server: LiveServer) -> requests.Session:
    """requests with the server's API key, if it has one."""
    session = requests.Session()
    if server.api_key:
        session.headers["Authorization"] = f"Bearer {server.api_key}"
    return session


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
