"""/v1/audio/transcriptions and /translations with the openai client, on synthesized speech."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.conftest import metric
from tests.speech import speech_with_pauses, synthesize, wer

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the quiet forest."
RATE = 16000


def encode(audio: np.ndarray, fmt: str = "WAV", rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return synthesize(TEXT)


@pytest.fixture(scope="module")
def wav(speech: np.ndarray) -> bytes:
    return encode(speech)


def test_transcription_json(openai_client, wav):
    result = openai_client.audio.transcriptions.create(model="whisper-tiny.en", file=("speech.wav", wav))
    assert wer(TEXT, result.text) < 0.2, result.text
    assert result.usage.type == "duration" and result.usage.seconds > 3


def test_transcription_flac_at_another_rate(openai_client, speech):
    resampled = np.interp(np.arange(0, len(speech), 16000 / 22050), np.arange(len(speech)), speech)
    flac = encode(resampled.astype(np.float32), "FLAC", 22050)
    result = openai_client.audio.transcriptions.create(model="whisper-tiny.en", file=("speech.flac", flac))
    assert wer(TEXT, result.text) < 0.2, result.text


def test_verbose_json_segments(openai_client, wav, speech):
    result = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en",
        file=("speech.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    duration = len(speech) / RATE
    assert result.language == "en"  # the ISO code, not "english"
    assert abs(result.duration - duration) < 0.05
    assert wer(TEXT, result.text) < 0.2
    assert result.segments, "verbose_json must list segments"
    previous_end = 0.0
    for i, segment in enumerate(result.segments):
        assert segment.id == i
        assert previous_end - 0.01 <= segment.start <= segment.end <= duration + 0.5
        assert segment.text.strip()
        previous_end = segment.end
    joined = " ".join(s.text.strip() for s in result.segments)
    assert wer(TEXT, joined) < 0.2


TIMESTAMP = r"\d\d:\d\d:\d\d[,.]\d\d\d --> \d\d:\d\d:\d\d[,.]\d\d\d"


def test_srt(openai_client, wav):
    srt = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("a.wav", wav), response_format="srt"
    )
    blocks = [b for b in srt.strip().split("\n\n") if b]
    assert blocks
    for i, block in enumerate(blocks, start=1):
        number, times, *text = block.split("\n")
        assert number == str(i)
        assert re.fullmatch(TIMESTAMP, times) and "," in times
        assert text
    spoken = " ".join(" ".join(b.split("\n")[2:]) for b in blocks)
    assert wer(TEXT, spoken) < 0.2


def test_vtt(openai_client, wav):
    vtt = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("a.wav", wav), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT\n\n")
    cues = [c for c in vtt[len("WEBVTT\n\n") :].strip().split("\n\n") if c]
    assert cues
    for cue in cues:
        times, *text = cue.split("\n")
        assert re.fullmatch(TIMESTAMP, times) and "." in times
        assert text


def test_text_format(openai_client, wav):
    text = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("a.wav", wav), response_format="text"
    )
    assert isinstance(text, str) and wer(TEXT, text) < 0.2


def test_streaming_transcription(openai_client, wav):
    events = list(
        openai_client.audio.transcriptions.create(model="whisper-tiny.en", file=("a.wav", wav), stream=True)
    )
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert deltas, "expected at least one delta event"
    assert events[-1].type == "transcript.text.done"
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert "".join(e.delta for e in deltas).strip() == events[-1].text
    assert wer(TEXT, events[-1].text) < 0.2


LONG_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "My grandmother baked fresh bread every Sunday morning.",
    "Please remember to water the plants while I am away.",
    "A small boat drifted slowly across the calm lake.",
    "The library closes early on public holidays.",
    "We watched the stars from the top of the hill.",
    "He forgot his umbrella and got caught in the rain.",
    "The children laughed as the puppy chased its tail.",
]


@pytest.fixture(scope="module")
def long_wav() -> bytes:
    return encode(speech_with_pauses(LONG_TEXTS, pause_s=1.0))  # > 30 s: several Whisper windows


def test_long_audio_streams_several_deltas(openai_client, long_wav):
    events = list(
        openai_client.audio.transcriptions.create(
            model="whisper-tiny.en", file=("long.wav", long_wav), stream=True
        )
    )
    assert len([e for e in events if e.type == "transcript.text.delta"]) >= 2
    assert wer(" ".join(LONG_TEXTS), events[-1].text) < 0.2, events[-1].text


def test_long_audio_verbose_json(openai_client, long_wav):
    result = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("long.wav", long_wav), response_format="verbose_json"
    )
    assert result.duration > 30
    assert wer(" ".join(LONG_TEXTS), result.text) < 0.2, result.text
    assert result.segments[-1].end > 30


def test_multilingual_model_with_language(openai_client, wav):
    result = openai_client.audio.transcriptions.create(
        model="whisper-base", file=("a.wav", wav), language="en"
    )
    assert wer(TEXT, result.text) < 0.2, result.text


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_translation_with_whisper_base(openai_client, wav):
    result = openai_client.audio.translations.create(model="whisper-base", file=("a.wav", wav))
    # English speech translated to English is (close to) its transcript.
    assert wer(TEXT, result.text) < 0.3, result.text
    verbose = openai_client.audio.translations.create(
        model="whisper-base", file=("a.wav", wav), response_format="verbose_json"
    )
    assert verbose.task == "translate" and verbose.segments


# ---- Whisper's confidence figures, and silence


@pytest.mark.parametrize("model", ["whisper-tiny.en", "whisper-base"])
def test_verbose_json_confidence_figures(openai_client, wav, model):
    result = openai_client.audio.transcriptions.create(
        model=model, file=("speech.wav", wav), response_format="verbose_json"
    )
    assert result.language == "en" and wer(TEXT, result.text) < 0.2, result.text
    assert result.segments
    for segment in result.segments:
        assert isinstance(segment.avg_logprob, float) and -1.0 < segment.avg_logprob < 0, segment
        assert isinstance(segment.no_speech_prob, float) and 0 <= segment.no_speech_prob < 0.6, segment
        assert segment.compression_ratio > 0, segment


def windows_decoded(server) -> float:
    return metric(requests.get(f"{server.base_url}/metrics", timeout=10).text, "rtserve_asr_windows_total")


SILENT_FILES = {
    "20 s of zeros": lambda: encode(np.zeros(20 * RATE, np.float32)),
    "20 s of low noise": lambda: encode(
        (0.003 * np.random.default_rng(7).standard_normal(20 * RATE)).astype(np.float32)
    ),
    "10 min of silent FLAC": lambda: encode(np.zeros(600 * RATE, np.float32), "FLAC"),
}


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "stream"])
@pytest.mark.parametrize("name", list(SILENT_FILES))
def test_no_speech_transcribes_to_nothing_without_whisper(server, openai_client, name, fmt):
    data = SILENT_FILES[name]()
    before, started = windows_decoded(server), time.monotonic()
    file = ("silence.flac" if "FLAC" in name else "silence.wav", data)
    if fmt == "stream":
        events = list(
            openai_client.audio.transcriptions.create(model="whisper-tiny.en", file=file, stream=True)
        )
        assert [e.type for e in events] == ["transcript.text.done"] and events[0].text == ""
    else:
        result = openai_client.audio.transcriptions.create(
            model="whisper-tiny.en", file=file, response_format=fmt
        )
        assert result.text == "", result.text  # not "you you you"
        if fmt == "verbose_json":
            assert result.segments == [] and result.language == "en" and result.duration > 19
    assert windows_decoded(server) == before  # the VAD heard nothing: Whisper never ran
    assert time.monotonic() - started < 10


def test_silence_then_speech(openai_client):
    speech = speech_with_pauses(LONG_TEXTS[:2], pause_s=0.5)
    audio = np.concatenate([np.zeros(26 * RATE, np.float32), speech])
    result = openai_client.audio.transcriptions.create(
        model="whisper-tiny.en", file=("late.wav", encode(audio)), response_format="verbose_json"
    )
    assert wer(" ".join(LONG_TEXTS[:2]), result.text) < 0.1, result.text
    # Nothing made up for the silence: the first segment is the first sentence.
    assert result.segments[0].start > 20 and wer(LONG_TEXTS[0], result.segments[0].text) < 0.2
