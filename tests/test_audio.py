"""Audio input: log-mel features, file decoding, PCM16, resampling and window splitting."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

import audio.decode
from audio.decode import (
    AudioDecodeError,
    AudioTooLongError,
    decode_audio_file,
    pcm16_to_float,
    read_mono,
    resample,
)
from audio.features import N_SAMPLES, log_mel_spectrogram, pad_batch
from audio.segment import split_windows
from tests.speech import speech_with_pauses, synthesize


@pytest.mark.parametrize("n_mels", [80, 128])
def test_features_match_transformers(n_mels: int) -> None:
    from transformers import WhisperFeatureExtractor

    speech = synthesize("Testing the log mel spectrogram against the reference.")
    rng = np.random.default_rng(0)
    clips = [speech, 0.1 * rng.standard_normal(16000 * 7).astype(np.float32), np.zeros(8000, np.float32)]
    ours = log_mel_spectrogram(pad_batch(clips, N_SAMPLES), n_mels).numpy()
    reference = WhisperFeatureExtractor(feature_size=n_mels)
    ref = reference(clips, sampling_rate=16000, return_tensors="np").input_features
    assert ours.shape == ref.shape == (3, n_mels, 3000)
    assert np.abs(ours - ref).max() < 1e-4


def test_features_of_a_prefix_match_the_padded_window() -> None:
    speech = synthesize("Short clip for trimmed context.")
    frames = 1000  # 10 s
    full = log_mel_spectrogram(pad_batch([speech], N_SAMPLES))
    trimmed = log_mel_spectrogram(pad_batch([speech], frames * 160))
    assert trimmed.shape[-1] == frames
    assert torch.allclose(full[..., : frames - 1], trimmed[..., : frames - 1], atol=1e-5)


def _encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 16000, 1),
        ("WAV", "FLOAT", 44100, 2),
        ("FLAC", None, 22050, 1),
        ("OGG", "VORBIS", 48000, 2),
        ("MP3", "MPEG_LAYER_III", 24000, 1),
    ],
)
def test_decode_formats(fmt: str, subtype: str | None, rate: int, channels: int) -> None:
    speech16k = synthesize("Decoding audio files of every kind.")
    native = resample(speech16k, 16000, rate)
    audio = np.stack([native] * channels, axis=1) if channels > 1 else native
    decoded = decode_audio_file(_encode(audio, rate, fmt, subtype))
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    # Lossy codecs add encoder delay/padding; the length must still be close.
    assert abs(len(decoded) - len(speech16k)) < 0.1 * 16000
    n = min(len(decoded), len(speech16k))
    if fmt in ("WAV", "FLAC"):
        assert np.corrcoef(decoded[:n], speech16k[:n])[0, 1] > 0.99
    else:
        assert 0.3 < np.abs(decoded).max() <= 1.01


def test_decode_errors() -> None:
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_audio_file(b"")
    with pytest.raises(AudioDecodeError, match="could not decode"):
        decode_audio_file(b"this is not audio at all, just some text" * 10)
    with pytest.raises(AudioDecodeError, match="no samples"):
        decode_audio_file(_encode(np.zeros(0, np.float32), 16000, "WAV", "PCM_16"))


def test_decoded_duration_limit() -> None:
    ten_minutes = _encode(np.zeros(600 * 16000, np.float32), 16000, "FLAC", "PCM_16")
    with pytest.raises(AudioTooLongError, match="600.0 seconds; the limit is 60 seconds") as too_long:
        decode_audio_file(ten_minutes, max_seconds=60)  # the header says so: nothing is decoded
    assert (too_long.value.seconds, too_long.value.limit_s) == (600.0, 60)
    assert decode_audio_file(ten_minutes, max_seconds=600).shape == (600 * 16000,)


def test_decoding_stops_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Block by block: a stream longer than its header says (or without one) is cut off at the limit."""
    monkeypatch.setattr(audio.decode, "DECODE_BLOCK_FRAMES", 1000)
    stereo = np.random.default_rng(0).uniform(-0.5, 0.5, (22050, 2)).astype(np.float32)
    wav = _encode(stereo, 22050, "WAV", "FLOAT")
    with sf.SoundFile(io.BytesIO(wav)) as f:
        assert read_mono(f, max_frames=22049) is None
    with sf.SoundFile(io.BytesIO(wav)) as f:
        mono = read_mono(f, max_frames=22050)
    assert mono is not None and np.allclose(mono, stereo.mean(axis=1))


def test_pcm16() -> None:
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    out = pcm16_to_float(samples.tobytes())
    assert out.dtype == np.float32
    assert np.allclose(out, [0.0, 0.5, -1.0, 32767 / 32768])
    assert pcm16_to_float(b"").size == 0
    with pytest.raises(AudioDecodeError):
        pcm16_to_float(b"\x00\x01\x02")


def test_resample_length() -> None:
    tone = np.sin(np.arange(44100) * 2 * np.pi * 440 / 44100).astype(np.float32)
    out = resample(tone, 44100, 16000)
    assert abs(len(out) - 16000) <= 1 and out.dtype == np.float32


def test_split_windows_on_80s_speech() -> None:
    sentences = [
        "The first part of the long recording talks about the weather and the season.",
        "Then the speaker moves on to the plans for the weekend and the trip to the lake.",
        "After that there is a long description of the food they want to cook together.",
        "Finally everyone agrees to meet again next month to talk about the results.",
    ]
    clip = speech_with_pauses(sentences, pause_s=0.7)
    while len(clip) < 80 * 16000:
        clip = np.concatenate([clip, speech_with_pauses(sentences, pause_s=0.7)])
    clip = clip[: 80 * 16000]
    windows = split_windows(clip)
    assert windows[0][0] == 0 and windows[-1][1] == len(clip)
    assert len(windows) == 3
    for (_, end), (next_start, _) in zip(windows, windows[1:], strict=False):
        assert end == next_start
    frame = 1600
    loud = np.sqrt(np.mean(np.square(clip[: len(clip) // frame * frame].reshape(-1, frame)), axis=1)).max()
    for start, end in windows:
        assert 0 < end - start <= 30 * 16000
        if end < len(clip):  # cut inside a pause, not inside a word
            around = clip[end - frame // 2 : end + frame // 2]
            assert np.sqrt(np.mean(np.square(around))) < 0.05 * loud


def test_split_windows_short_and_empty() -> None:
    assert split_windows(np.zeros(0, np.float32)) == []
    assert split_windows(np.zeros(16000 * 5, np.float32)) == [(0, 80000)]
    exact = np.zeros(16000 * 30, np.float32)
    assert split_windows(exact) == [(0, len(exact))]
    noisy = np.random.default_rng(1).standard_normal(16000 * 65).astype(np.float32)
    windows = split_windows(noisy)
    assert windows[-1][1] == len(noisy) and all(e - s <= 480000 for s, e in windows)
