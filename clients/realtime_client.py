"""Stream a WAV file (or the microphone) to /v1/realtime and print the text as it arrives.

    python -m clients.realtime_client speech.wav                      # OpenAI dialect, server VAD
    python -m clients.realtime_client speech.wav --speed 4            # 4x faster than real time
    python -m clients.realtime_client speech.wav --dialect vllm       # vLLM's realtime protocol
    python -m clients.realtime_client question.wav --conversation     # spoken turns answered by the LLM
    python -m clients.realtime_client question.wav --conversation --save-audio reply.wav  # ... aloud
    rtserve realtime --mic                                            # needs `sounddevice`

Partial text is printed live on one line per turn; the final transcript replaces it when the turn ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import numpy as np

OPENAI_RATE = 24000
VLLM_RATE = 16000
TAIL_SILENCE_S = 1.0  # appended after a file so server VAD sees the last turn end


# ---- audio helpers (also used by the tests and the benchmark) ----


def load_audio(path: str, rate: int) -> np.ndarray:
    """A sound file as float32 mono at `rate`."""
    import soundfile as sf
    import soxr

    audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if file_rate != rate:
        audio = soxr.resample(audio, file_rate, rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def pcm16_base64(audio: np.ndarray) -> str:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


def chunks(audio: np.ndarray, rate: int, chunk_ms: int = 100) -> Iterator[np.ndarray]:
    step = max(1, rate * chunk_ms // 1000)
    for i in range(0, len(audio), step):
        yield audio[i : i + step]


async def paced(audio: np.ndarray, rate: int, speed: float, chunk_ms: int = 100) -> AsyncIterator[np.ndarray]:
    """Yield chunks no faster than `speed` x real time (speed <= 0: as fast as possible)."""
    start = time.monotonic()
    sent = 0
    for chunk in chunks(audio, rate, chunk_ms):
        if speed > 0:
            due = start + sent / rate / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield chunk
        sent += len(chunk)


def openai_transcription_session(
    model: str | None = None, rate: int = OPENAI_RATE, vad: bool = True, language: str | None = None
) -> dict:
    transcription: dict = {}
    if model:
        transcription["model"] = model
    if language:
        transcription["language"] = language
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": rate},
                "transcription": transcription,
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500} if vad else None,
            }
        },
    }


def openai_conversation_session(
    rate: int = OPENAI_RATE,
    instructions: str | None = None,
    audio_out: bool = False,
    voice: str | None = None,
) -> dict:
    """A conversation session; `audio_out`: spoken replies (PCM16 at 24 kHz) with their transcripts."""
    session: dict = {
        "type": "realtime",
        "output_modalities": ["audio" if audio_out else "text"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": rate}, "turn_detection": {"type": "server_vad"}}
        },
    }
    if instructions:
        session["instructions"] = instructions
    if voice:
        session["audio"]["output"] = {"voice": voice}
    return session


REPLY_TEXT_DELTAS = ("response.output_text.delta", "response.output_audio_transcript.delta")


def save_reply_audio(path: str, pcm: bytes) -> None:
    """The replies' audio (PCM16 at 24 kHz, in order) as a sound file; the format follows the suffix."""
    import soundfile as sf

    sf.write(path, np.frombuffer(pcm, dtype="<i2"), OPENAI_RATE, subtype="PCM_16")


# ---- the client ----


@dataclass
class Transcript:
    turns: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)


class Printer:
    """Live partial text on the current line; a final line per turn. `silent` prints nothing at all."""

    def __init__(self, silent: bool = False, partials: bool = True) -> None:
        self.silent = silent
        self.partials = partials and not silent
        self.partial = ""

    def delta(self, text: str) -> None:
        self.partial += text
        if self.partials:
            sys.stdout.write(text)
            sys.stdout.flush()

    def final(self, label: str, text: str) -> None:
        if not self.silent:
            sys.stdout.write("\r\033[K" if self.partial and self.partials else "")
            print(f"[{label}] {text}", flush=True)
        self.partial = ""

    def info(self, text: str) -> None:
        if not self.silent:
            print(text, file=sys.stderr, flush=True)


async def _connect(url: str, api_key: str | None, query: str = ""):
    import websockets

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return await websockets.connect(
        url.rstrip("/") + "/v1/realtime" + query, additional_headers=headers, max_size=None
    )


async def run_vllm(
    url: str, audio16k: np.ndarray, model: str | None, speed: float, api_key: str | None, printer: Printer
) -> Transcript:
    """vLLM dialect: one streamed utterance (commit, appends, commit final) -> transcription.done."""
    out = Transcript()
    async with await _connect(url, api_key) as ws:
        json.loads(await ws.recv())  # session.created
        await ws.send(json.dumps({"type": "session.update", "model": model}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))

        async def send() -> None:
            async for chunk in paced(audio16k, VLLM_RATE, speed):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "transcription.delta":
                    printer.delta(event["delta"])
                elif event["type"] == "transcription.done":
                    printer.final("final", event["text"])
                    out.turns.append(event["text"])
                    break
                elif event["type"] == "error":
                    printer.info(f"error: {event}")
                    out.errors.append(event)
        finally:
            sender.cancel()
    return out


async def run_openai(
    url: str,
    audio: np.ndarray,
    speed: float,
    api_key: str | None,
    printer: Printer,
    conversation: bool = False,
    model: str | None = None,
    vad: bool = True,
    timeout_s: float = 120.0,
    reply_audio: bytearray | None = None,
) -> Transcript:
    """OpenAI GA dialect: stream at 24 kHz with server VAD (or one manual commit at the end).

    Returns once every turn is transcribed (and, in conversation mode, answered). A second identical
    session.update is sent after the audio: its `session.updated` proves the server has read everything.
    `reply_audio`: ask for spoken replies and collect their audio (PCM16 at 24 kHz) into it.
    """
    out = Transcript()
    query = "" if conversation else "?intent=transcription"
    session = (
        openai_conversation_session(audio_out=reply_audio is not None)
        if conversation
        else openai_transcription_session(model, vad=vad)
    )
    async with await _connect(url, api_key, query) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        pending_turns = responses_open = updates = 0

        async def send() -> None:
            tail = np.zeros(int(TAIL_SILENCE_S * OPENAI_RATE), dtype=np.float32)
            async for chunk in paced(np.concatenate([audio, tail]), OPENAI_RATE, speed):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
            if not vad:
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "session.update", "session": session}))

        async def receive() -> None:
            nonlocal pending_turns, responses_open, updates
            while True:
                unanswered = conversation and len(out.replies) < sum(1 for t in out.turns if t.strip())
                if updates >= 2 and pending_turns == 0 and responses_open == 0 and not unanswered:
                    return
                event = json.loads(await ws.recv())
                kind = event["type"]
                if kind == "session.updated":
                    updates += 1
                elif kind == ("input_audio_buffer.speech_started" if vad else "input_audio_buffer.committed"):
                    pending_turns += 1
                elif kind == "conversation.item.input_audio_transcription.delta":
                    printer.delta(event["delta"])
                elif kind == "conversation.item.input_audio_transcription.completed":
                    pending_turns -= 1
                    printer.final("you" if conversation else "final", event["transcript"])
                    out.turns.append(event["transcript"])
                elif kind == "conversation.item.input_audio_transcription.failed":
                    pending_turns -= 1
                    printer.info(f"transcription failed: {event['error']}")
                elif kind == "response.created":
                    responses_open += 1
                elif kind in REPLY_TEXT_DELTAS:
                    printer.delta(event["delta"])
                elif kind == "response.output_audio.delta" and reply_audio is not None:
                    reply_audio.extend(base64.b64decode(event["delta"]))
                elif kind == "response.done":
                    responses_open -= 1
                    text = "".join(
                        part.get("text") or part.get("transcript") or ""
                        for item in event["response"].get("output", [])
                        for part in item.get("content", [])
                    )
                    printer.final(f"assistant ({event['response']['status']})", text)
                    out.replies.append(text)
                elif kind == "error":
                    printer.info(f"error: {event['error']}")
                    out.errors.append(event["error"])

        sender = asyncio.create_task(send())
        try:
            await asyncio.wait_for(receive(), len(audio) / OPENAI_RATE / max(speed, 1e-3) + timeout_s)
        except asyncio.TimeoutError:
            printer.info("timed out waiting for the server")
        finally:
            sender.cancel()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtserve realtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="audio file to stream (WAV, FLAC, ...)")
    src.add_argument("--mic", action="store_true", help="stream the microphone (needs `sounddevice`)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (http:// or ws://)")
    p.add_argument(
        "--dialect", choices=["openai", "vllm"], default="openai", help="which realtime protocol to speak"
    )
    p.add_argument("--conversation", action="store_true", help="voice chat: the LLM answers each turn")
    p.add_argument(
        "--save-audio",
        metavar="PATH",
        help="with --conversation: ask for spoken replies and save their audio (24 kHz; .wav, .flac, .ogg)",
    )
    p.add_argument("--model", help="speech model (default: the server's first)")
    p.add_argument("--language", help="spoken language for multilingual models")
    p.add_argument(
        "--speed", type=float, default=1.0, help="stream this many times faster than real time (0: no pacing)"
    )
    p.add_argument("--manual", action="store_true", help="no server VAD: commit once at the end of the file")
    p.add_argument("--api-key", help="API key (Authorization: Bearer)")
    p.add_argument("--quiet", action="store_true", help="print only the final text of each turn")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    url = args.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    printer = Printer(partials=not args.quiet)
    if args.dialect == "vllm" and args.conversation:
        raise SystemExit("--conversation needs --dialect openai (vLLM's protocol is transcription only)")
    if args.save_audio and not args.conversation:
        raise SystemExit("--save-audio needs --conversation (only replies are spoken)")
    reply_audio = bytearray() if args.save_audio else None
    try:
        if args.mic:
            from clients.realtime_mic import run_mic

            asyncio.run(run_mic(url, args.api_key, args.conversation, args.model, printer, reply_audio))
        elif args.dialect == "vllm":
            audio = load_audio(args.file, VLLM_RATE)
            asyncio.run(run_vllm(url, audio, args.model, args.speed, args.api_key, printer))
        else:
            audio = load_audio(args.file, OPENAI_RATE)
            asyncio.run(
                run_openai(
                    url,
                    audio,
                    args.speed,
                    args.api_key,
                    printer,
                    args.conversation,
                    args.model,
                    not args.manual,
                    reply_audio=reply_audio,
                )
            )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(f"cannot reach {args.url}: {exc}") from None
    finally:
        if reply_audio is not None:
            save_reply_audio(args.save_audio, bytes(reply_audio))
            seconds = len(reply_audio) / 2 / OPENAI_RATE
            printer.info(f"saved {seconds:.1f} s of reply audio to {args.save_audio}")


if __name__ == "__main__":
    main()
