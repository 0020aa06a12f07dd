"""Speech synthesis benchmark: Piper's real-time factor, padded VITS batches against one sentence at a
time, and POST /v1/audio/speech's first audio against its whole, with the embedded joe voice.

In the same run, for the same sentences:
- in process (engine/models/piper_voice.py, the lane's model): every sentence one at a time, then the same
  phoneme ids as padded batches of 2, 4 and 8 through the one ONNX session (input, input_lengths, scales),
  with the generator's noise off so both make the same lengths; the ratio is what batching would buy;
- over HTTP (a server with the TTS lane and whisper-tiny.en): a multi-sentence text streamed as pcm: time
  to the first byte against the whole, and the real-time factor seen by the client, at 1 and 4 concurrent
  requests; then a transcription's latency alone and while two long texts are being spoken.

    python -m clients.bench_tts                              # starts a server (TTS + whisper-tiny.en)
    python -m clients.bench_tts --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import numpy as np

from clients.server_process import ServerProcess
from engine.models.piper_voice import DEFAULT_VOICE, PiperVoiceModel

SENTENCES = [
    "The capital of France is Paris.",
    "It has been the capital for centuries, and it is also the largest city in the country.",
    "Sure, here is the answer.",
    "Tomorrow will be sunny with a light breeze from the west.",
    "Please remember to bring your ticket and a bottle of water.",
    "The museum opens at ten in the morning.",
    "We will walk along the river after lunch, if the weather stays fine.",
    "Thank you.",
]
HTTP_TEXT = " ".join(SENTENCES)
OUTPUT_RATE = 24000
ASR_MODEL = "whisper-tiny.en"


def _run(model: PiperVoiceModel, ids: list[list[int]]) -> np.ndarray:
    width = max(len(row) for row in ids)
    padded = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        padded[i, : len(row)] = row
    inputs = {
        "input": padded,
        "input_lengths": np.array([len(row) for row in ids], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # no noise: same lengths either way
    }
    return model.voice.session.run(None, inputs)[0]


def bench_in_process(repeat: int) -> None:
    model = PiperVoiceModel(DEFAULT_VOICE)
    ids = [model.phoneme_ids(text)[0] for text in SENTENCES]
    audio_s = sum(_run(model, [row]).shape[-1] for row in ids) / model.sample_rate
    print(f"in process: {len(SENTENCES)} sentences, {audio_s:.1f} s of audio at {model.sample_rate} Hz")
    ordered = sorted(ids, key=len)  # each batch pads as little as it can
    jobs = {"one at a time": [[row] for row in ids]}
    for size in (2, 4, 8):
        jobs[f"batches of {size}"] = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    # Rounds interleave the variants, so a noisy neighbour slows them alike; best round each.
    # CPU time (this process, all onnxruntime threads) is steadier than wall time on a shared machine.
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeat):
        for name, batches in jobs.items():
            wall, cpu = _timed(lambda b=batches: [_run(model, batch) for batch in b])
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    one_wall, one_cpu = best["one at a time"]
    for name, (wall, cpu) in best.items():
        print(
            f"  {name:14s} wall {wall:6.2f} s ({one_wall / wall:.2f}x one at a time)  "
            f"CPU {cpu:6.2f} s ({one_cpu / cpu:.2f}x)  real-time factor {wall / audio_s:.3f}"
        )
    wall, cpu = min(_timed(lambda: [model.speak(t, 1.0) for t in SENTENCES]) for _ in range(repeat))
    print(f"  lane's speak()  wall {wall:6.2f} s  CPU {cpu:6.2f} s  (phonemize + model + PCM16, noise on)")


def _timed(job) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for job()."""
    wall, cpu = time.perf_counter(), time.process_time()
    job()
    return time.perf_counter() - wall, time.process_time() - cpu


async def _speech(session: aiohttp.ClientSession, url: str) -> tuple[float, float, float]:
    """(seconds to the first byte, seconds to the last, seconds of audio)."""
    body = {"model": "tts-1", "voice": "alloy", "input": HTTP_TEXT, "response_format": "pcm"}
    started = time.perf_counter()
    first = 0.0
    size = 0
    async with session.post(f"{url}/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_any():
            first = first or time.perf_counter() - started
            size += len(chunk)
    return first, time.perf_counter() - started, size / 2 / OUTPUT_RATE


async def bench_http(url: str, repeat: int) -> None:
    print(f"HTTP /v1/audio/speech, {len(HTTP_TEXT)} characters of text, stream_format audio, pcm:")
    async with aiohttp.ClientSession() as session:
        await _speech(session, url)  # warm-up
        for concurrency in (1, 4):
            results = []
            for _ in range(repeat):
                results += await asyncio.gather(*(_speech(session, url) for _ in range(concurrency)))
            first = statistics.median(r[0] for r in results)
            whole = statistics.median(r[1] for r in results)
            audio = statistics.median(r[2] for r in results)
            print(
                f"  {concurrency} at once: first audio {first:.2f} s, whole {whole:.2f} s "
                f"({whole / first:.1f}x later), {audio:.1f} s of audio, client real-time factor "
                f"{whole / (audio * concurrency):.3f} (per request's audio, all requests together)"
            )


async def _transcribe(session: aiohttp.ClientSession, url: str, wav: bytes) -> float:
    form = aiohttp.FormData()
    form.add_field("file", wav, filename="speech.wav", content_type="audio/wav")
    form.add_field("model", ASR_MODEL)
    started = time.perf_counter()
    async with session.post(f"{url}/v1/audio/transcriptions", data=form) as response:
        response.raise_for_status()
        await response.read()
    return time.perf_counter() - started


async def bench_transcription_under_tts(url: str, repeat: int) -> None:
    """A transcription's latency alone, and while 2 long texts are being spoken over HTTP."""
    async with aiohttp.ClientSession() as session:
        body = {"model": "tts-1", "voice": "alloy", "input": SENTENCES[1], "response_format": "wav"}
        async with session.post(f"{url}/v1/audio/speech", json=body) as response:
            if response.status != 200:
                return
            wav = await response.read()
        await _transcribe(session, url, wav)  # warm-up
        alone = [await _transcribe(session, url, wav) for _ in range(repeat + 1)]
        flood = [asyncio.create_task(_speech(session, url)) for _ in range(2)]
        await asyncio.sleep(1.0)
        during = [await _transcribe(session, url, wav) for _ in range(repeat + 1)]
        for task in flood:
            task.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
    a, d = statistics.median(alone), statistics.median(during)
    print(
        f"transcription of a 5 s clip ({ASR_MODEL}): alone {a:.2f} s, while 2 texts are spoken {d:.2f} s ({d / a:.2f}x)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start one with only the TTS lane)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; in-process times are the best round's")
    parser.add_argument("--no-http", action="store_true", help="only the in-process measurements")
    parser.add_argument("--http-only", action="store_true", help="only the measurements over HTTP")
    args = parser.parse_args(argv)
    if not args.http_only:
        bench_in_process(args.repeat)
    if args.no_http:
        return
    server = None
    url = args.url
    if url is None:
        server = ServerProcess.start(["--llm", "none", "--asr", ASR_MODEL, "--embed", "none"])
        url = server.base_url
    try:
        asyncio.run(bench_http(url, args.repeat))
        asyncio.run(bench_transcription_under_tts(url, args.repeat))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
