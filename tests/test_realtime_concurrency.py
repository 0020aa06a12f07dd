"""Many live sessions at once: every one gets its own correct transcript, and the engine batches their
decodes together (GET /metrics shows Whisper batches that mixed requests of several sessions)."""

from __future__ import annotations

import asyncio

import requests

from clients.realtime_client import Printer, run_openai, run_vllm
from tests.conftest import metric
from tests.speech import speech_with_pauses, synthesize, wer

SESSIONS = 8
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


async def test_eight_sessions_stream_at_once(server):
    before = requests.get(f"{server.base_url}/metrics", timeout=10).text
    quiet = Printer(silent=True)

    async def session(i: int):
        text = SENTENCES[i]
        if i % 2:  # half speak OpenAI's dialect with server VAD, half vLLM's
            audio = speech_with_pauses([text], pause_s=0.5, sample_rate=24000)
            result = await run_openai(server.ws_url, audio, speed=2.0, api_key=server.api_key, printer=quiet)
        else:
            result = await run_vllm(server.ws_url, synthesize(text), None, 2.0, server.api_key, quiet)
        return text, result

    results = await asyncio.gather(*(session(i) for i in range(SESSIONS)))
    for text, result in results:
        assert not result.errors, result.errors
        assert len(result.turns) == 1, result.turns
        assert wer(text, result.turns[0]) < 0.2, (text, result.turns[0])

    after = requests.get(f"{server.base_url}/metrics", timeout=10).text
    mixed = metric(after, "rtserve_asr_multi_request_batches_total") - metric(
        before, "rtserve_asr_multi_request_batches_total"
    )
    assert mixed > 0, "no Whisper batch mixed windows of two sessions"
    assert metric(after, "rtserve_asr_max_batch_size") >= 2
