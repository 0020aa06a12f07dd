"""Spoken conversations: end of the user's speech -> the first reply text and the first reply audio.

    python -m clients.bench_voice --sessions 1,2,4,8 --questions 3

N conversation sessions (OpenAI dialect, server VAD, output_modalities ["audio"]) each ask spoken
questions at real-time pace and wait for each spoken answer. Measured from the end of the question's
speech (the instant its last voiced sample was sent, so server VAD's end-of-turn silence counts):
  text   the first response.output_audio_transcript.delta
  audio  the first response.output_audio.delta
  RTF    per reply: (last audio delta - first text delta) / seconds of reply audio; under 1 means the
         reply is spoken faster than it plays (it includes the LLM still writing)

In the same run, the three-server way on the same server, one request after another for each question
(the client holds the recorded question the moment speech ends): POST /v1/audio/transcriptions, then
POST /v1/chat/completions, then POST /v1/audio/speech (pcm, streamed): first text = the chat reply,
first audio = the speech response's first bytes; its synthesis RTF = the speech request's time over the
audio's length.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from clients.realtime_client import pcm16_base64
from clients.server_process import ROOT, ServerProcess

RATE = 24000  # audio/pcm both ways
CHUNK_S = 0.1
LEAD_S = 0.5
TAIL_S = 1.5  # silence after each question while the answer comes (more is sent until it is done)
# A realtime session's default instructions (realtime/session.py): what a voice assistant is asked for.
INSTRUCTIONS = "You are a helpful voice assistant. Answer in one or two short sentences."
MAX_OUTPUT_TOKENS = 96
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "How many days are there in a week?",
]
TARGET_FIRST_AUDIO_S = 1.2
TARGET_SPEEDUP = 1.5
TARGET_P95_S = 2.0
MAX_WAIT_S = 120


@dataclass
class Question:
    text: str
    audio: np.ndarray  # at RATE, with LEAD_S of silence before the speech
    speech_end_s: float  # into `audio`


@dataclass
class Timings:
    text: list[float] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)
    rtf: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_questions() -> list[Question]:
    from tests.speech import synthesize

    out = []
    for text in QUESTIONS:
        speech = np.asarray(synthesize(text, RATE), dtype=np.float32)
        voiced = np.nonzero(np.abs(speech) > 0.02)[0]
        end = (voiced[-1] + 1) / RATE if len(voiced) else len(speech) / RATE
        lead = np.zeros(int(LEAD_S * RATE), dtype=np.float32)
        out.append(Question(text, np.concatenate([lead, speech]), LEAD_S + end))
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- realtime sessions ----


class Reply:
    def __init__(self) -> None:
        self.first_text: float | None = None
        self.first_audio: float | None = None
        self.last_audio = 0.0
        self.audio_samples = 0
        self.done = asyncio.Event()


async def stream_question(ws, question: Question, reply: Reply) -> float | None:
    """Send the question at real-time pace, then silence until the reply is done: when speech ended
    (None: no reply within MAX_WAIT_S)."""
    start = time.perf_counter()
    speech_end = start + question.speech_end_s
    n = int(CHUNK_S * RATE)
    silence = np.zeros(n, dtype=np.float32)
    sent = 0
    while sent < len(question.audio) + TAIL_S * RATE or not reply.done.is_set():
        chunk = question.audio[sent : sent + n] if sent < len(question.audio) else silence
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
        sent += len(chunk)
        await asyncio.sleep(max(0.0, start + sent / RATE - time.perf_counter()))
        if sent > len(question.audio) + MAX_WAIT_S * RATE:
            return None
    return speech_end


async def receive(ws, replies: asyncio.Queue[Reply], timings: Timings) -> None:
    current: Reply | None = None
    async for message in ws:
        event = json.loads(message)
        kind, now = event["type"], time.perf_counter()
        if kind == "response.created":
            current = await replies.get()
        elif current is None:
            if kind == "error":
                timings.errors.append(event["error"]["message"])
        elif kind == "response.output_audio_transcript.delta" and current.first_text is None:
            current.first_text = now
        elif kind == "response.output_audio.delta":
            current.first_audio = current.first_audio or now
            current.last_audio = now
            current.audio_samples += len(base64.b64decode(event["delta"])) // 2
        elif kind == "response.done":
            if event["response"]["status"] != "completed":
                timings.errors.append(f"response {event['response']['status']}")
            current.done.set()
            current = None
        elif kind == "error":
            timings.errors.append(event["error"]["message"])


async def run_session(ws_url: str, llm: str, questions: list[Question], delay: float) -> Timings:
    import websockets

    timings = Timings()
    await asyncio.sleep(delay)
    async with websockets.connect(f"{ws_url}/v1/realtime?model={llm}", max_size=None) as ws:
        session = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": INSTRUCTIONS,
            "max_output_tokens": MAX_OUTPUT_TOKENS,
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}}},
        }
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        replies: asyncio.Queue[Reply] = asyncio.Queue()
        receiver = asyncio.create_task(receive(ws, replies, timings))
        try:
            for question in questions:
                reply = Reply()
                replies.put_nowait(reply)
                speech_end = await stream_question(ws, question, reply)
                if speech_end is None:
                    timings.errors.append(f"no reply to {question.text!r} within {MAX_WAIT_S} s")
                    break  # a late reply would be taken for the next question's
                if reply.first_text is None or reply.first_audio is None or not reply.audio_samples:
                    timings.errors.append(f"no spoken reply to {question.text!r}")
                    continue
                timings.text.append(reply.first_text - speech_end)
                timings.audio.append(reply.first_audio - speech_end)
                timings.rtf.append((reply.last_audio - reply.first_text) / (reply.audio_samples / RATE))
        finally:
            receiver.cancel()
    return timings


async def run_level(ws_url: str, llm: str, n: int, questions: list[Question], per_session: int) -> Timings:
    tasks = []
    for i in range(n):
        mine = [questions[(i + k) % len(questions)] for k in range(per_session)]
        tasks.append(run_session(ws_url, llm, mine, delay=i * 0.37))  # staggered, like real callers
    total = Timings()
    for t in await asyncio.gather(*tasks):
        total.text += t.text
        total.audio += t.audio
        total.rtf += t.rtf
        total.errors += t.errors
    return total


# ---- the three-request baseline ----


def baseline(base_url: str, llm: str, questions: list[Question]) -> Timings:
    import requests
    import soundfile as sf

    timings = Timings()
    http = requests.Session()
    for question in questions:
        wav = io.BytesIO()
        sf.write(wav, question.audio, RATE, format="WAV", subtype="PCM_16")
        start = time.perf_counter()  # the recording ends with the speech: the client sends it now
        r = http.post(
            f"{base_url}/v1/audio/transcriptions",
            files={"file": ("question.wav", wav.getvalue(), "audio/wav")},
            data={"model": "whisper-tiny.en"},
            timeout=120,
        )
        heard = r.json()["text"]
        messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": heard}]
        body = {"model": llm, "messages": messages, "max_tokens": MAX_OUTPUT_TOKENS, "temperature": 0.0}
        reply = http.post(f"{base_url}/v1/chat/completions", json=body, timeout=120).json()
        text = reply["choices"][0]["message"]["content"]
        timings.text.append(time.perf_counter() - start)
        speech_body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
        spoken_at = time.perf_counter()
        first, samples = None, 0
        with http.post(f"{base_url}/v1/audio/speech", json=speech_body, stream=True, timeout=120) as r:
            r.raise_for_status()
            for chunk in r.iter_content(chunk_size=4096):
                first = first or time.perf_counter()
                samples += len(chunk) // 2
        if first is None or not samples:
            timings.errors.append(f"no speech for {text!r}")
            continue
        timings.audio.append(first - start)
        timings.rtf.append((time.perf_counter() - spoken_at) / (samples / RATE))
    return timings


# ---- the run ----


def row(name: str, t: Timings) -> str:
    return (
        f"| {name} | {pct(t.text, 50):.2f} / {pct(t.text, 95):.2f} s | {pct(t.audio, 50):.2f} / "
        f"{pct(t.audio, 95):.2f} s | {statistics.median(t.rtf) if t.rtf else float('nan'):.2f} | "
        f"{len(t.audio)} | {len(t.errors)} |"
    )


def run(args: argparse.Namespace) -> None:
    questions = load_questions()
    server = None
    base_url = args.url
    if base_url is None:
        cmd = ["--asr", "whisper-tiny.en", *args.server_args.split()]
        server = ServerProcess.start(cmd, log_path=ROOT / "artifacts" / "bench_voice_server.log")
        base_url = server.base_url
    try:
        import requests

        models = requests.get(f"{base_url}/v1/models", timeout=10).json()["data"]
        llm = next(m["id"] for m in models if m.get("max_model_len") and not m.get("task"))
        ws_url = base_url.replace("http", "ws", 1)
        asyncio.run(run_level(ws_url, llm, 1, questions, 1))  # warm-up, not counted
        print(
            "| sessions | first text p50 / p95 | first audio p50 / p95 | reply RTF p50 | replies | errors |"
        )
        print("|---|---|---|---|---|---|")
        levels: dict[int, Timings] = {}
        base = Timings()
        for i, n in enumerate(int(x) for x in args.sessions.split(",")):
            levels[n] = asyncio.run(run_level(ws_url, llm, n, questions, args.questions))
            print(row(f"realtime x{n}", levels[n]), flush=True)
            if i == 0:  # right after the first level, so the two are measured side by side
                base = baseline(base_url, llm, questions[: max(3, args.questions)])
                print(row("baseline: 3 HTTP requests, sequential", base), flush=True)
    finally:
        if server is not None:
            server.stop()
    summarize(levels, base)


def summarize(levels: dict[int, Timings], base: Timings) -> None:
    one = levels.get(min(levels)) if levels else None
    if one is not None and one.audio:
        first = pct(one.audio, 50)
        speedup = pct(base.audio, 50) / first
        print(
            f"\nfirst audio p50 at {min(levels)} session(s): {first:.2f} s (target < {TARGET_FIRST_AUDIO_S} s)"
        )
        print(f"first audio vs the sequential baseline: {speedup:.2f}x sooner (target >= {TARGET_SPEEDUP}x)")
    for n, t in levels.items():
        for error in sorted(set(t.errors)):
            print(f"errors at {n} session(s): {t.errors.count(error)}x {error}")
    ok = [n for n, t in levels.items() if t.audio and not t.errors and pct(t.audio, 95) < TARGET_P95_S]
    print(f"largest N with first-audio p95 < {TARGET_P95_S} s: {max(ok) if ok else 'none'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="bench_voice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", default="1,2,4,8", help="session counts, in order")
    p.add_argument("--questions", type=int, default=3, help="spoken questions per session per level")
    p.add_argument("--url", help="bench a running server instead of starting one")
    p.add_argument("--server-args", default="", help="extra `rtserve serve` flags for the started server")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
