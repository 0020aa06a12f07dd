"""Turn uploaded audio bytes into float32 mono 16 kHz samples."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000


class AudioDecodeError(ValueError):
    """The input is not audio we can read; the message is fit to show to a user."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int = TARGET_RATE) -> np.ndarray:
    if from_rate <= 0 or to_rate <= 0:
        raise AudioDecodeError(f"invalid sample rate {from_rate} -> {to_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate or audio.size == 0:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def decode_audio_file(data: bytes) -> np.ndarray:
    """Decode anything libsndfile reads (wav, flac, ogg/vorbis/opus, mp3...) to float32 mono 16 kHz."""
    if not data:
        raise AudioDecodeError("the audio file is empty")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(
            f"could not decode the audio file ({exc}); send wav, flac, ogg or mp3"
        ) from exc
    if samples.shape[0] == 0:
        raise AudioDecodeError("the audio file contains no samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioDecodeError("the audio file contains invalid (non-finite) samples")
    return resample(mono, int(rate), TARGET_RATE)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1). A trailing odd byte is an error."""
    if len(data) % 2:
        raise AudioDecodeError("PCM16 audio must have an even number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
