"""Concurrent HTTP requests share the engine's batches, give the same tokens as alone, and free on disconnect."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import requests

LLM = "smollm2-135m-instruct"

TOPICS = [
    "the sun", "the moon", "rivers", "mountains", "bread", "cats", "dogs", "trains",
    "music", "rain", "snow", "books", "bees", "ships", "clocks", "gardens",
    "coffee", "bridges", "owls", "deserts", "volcanoes", "kites", "islands", "forests",
    "stars", "chess", "tea", "bicycles", "lighthouses", "whales", "paper", "glass",
]  # fmt: skip


@pytest.fixture(scope="module")
def headers(server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}


def read_metrics(server, headers) -> dict[str, float]:
    text = requests.get(f"{server.base_url}/metrics", headers=headers, timeout=30).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


async def test_concurrent_chats_are_batched(async_openai_client, server, headers):
    async def ask(topic: str) -> str:
        response = await async_openai_client.chat.completions.create(
            model=LLM,
            messages=[{"role": "user", "content": f"Write one sentence about {topic}."}],
            temperature=0,
            max_tokens=24,
        )
        return response.choices[0].message.content

    answers = await asyncio.gather(*(ask(t) for t in TOPICS[:12]))
    assert all(answers)
    assert read_metrics(server, headers)["rtserve_llm_max_batch_size"] > 1


def chat_prompt_ids(server, headers, topic: str) -> list[int]:
    messages = [{"role": "user", "content": f"Tell me about {topic}."}]
    r = requests.post(f"{server.base_url}/tokenize", json={"messages": messages}, headers=headers, timeout=30)
    return r.json()["tokens"]


async def generate_ids(session: aiohttp.ClientSession, server, ids: list[int]) -> list[int]:
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 32, "temperature": 0, "ignore_eos": True}}
    async with session.post(f"{server.base_url}/generate", json=body) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["output_ids"]


async def test_greedy_batched_equals_alone(server, headers):
    prompts = [chat_prompt_ids(server, headers, topic) for topic in TOPICS]
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        alone = [await generate_ids(session, server, ids) for ids in prompts]
        before = read_metrics(server, headers)["rtserve_llm_max_batch_size"]
        together = await asyncio.gather(*(generate_ids(session, server, ids) for ids in prompts))
    assert all(len(ids) == 32 for ids in alone)
    mismatched = [TOPICS[i] for i in range(len(TOPICS)) if alone[i] != together[i]]
    assert not mismatched, f"batched greedy output differs from the solo run for: {mismatched}"
    assert read_metrics(server, headers)["rtserve_llm_max_batch_size"] >= max(before, 2)


def test_disconnect_frees_the_sequence(server, headers):
    before = read_metrics(server, headers)
    body = {
        "model": LLM,
        "messages": [{"role": "user", "content": "Count from one to one thousand."}],
        "max_tokens": 1500,
        "stream": True,
        "ignore_eos": True,
    }
    response = requests.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=60
    )
    lines = response.iter_lines()
    received = 0
    for line in lines:
        if line.startswith(b"data: "):
            received += 1
            if received >= 5:
                break
    assert read_metrics(server, headers)["rtserve_llm_requests_running"] >= 1
    response.close()  # drop the connection mid-stream

    deadline = time.monotonic() + 60  # a bound for a hung server, not a timing assertion
    after = read_metrics(server, headers)
    while time.monotonic() < deadline and (
        after["rtserve_llm_requests_running"] > 0
        or after["rtserve_llm_requests_aborted_total"] <= before["rtserve_llm_requests_aborted_total"]
    ):
        time.sleep(0.2)
        after = read_metrics(server, headers)
    assert after["rtserve_llm_requests_running"] == 0
    assert after["rtserve_llm_requests_aborted_total"] == before["rtserve_llm_requests_aborted_total"] + 1
    # far fewer than the 1500 tokens asked for were generated
    generated = after["rtserve_generation_tokens_total"] - before["rtserve_generation_tokens_total"]
    assert generated < 1500
