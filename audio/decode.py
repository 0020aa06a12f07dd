"""Turn uploaded audio bytes into float32 mono 16 kHz samples."""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
import soxr

from audio.constants import SAMPLE_RATE

DECODE_BLOCK_FRAMES = 1 << 18  # frames decoded at a time (about 5 s at 48 kHz)


class AudioDecodeError(ValueError):
    """The input is not audio we can read; the message is fit to show to a user."""


class AudioTooLongError(AudioDecodeError):
    """The decoded audio lasts longer than the limit. `seconds`: its duration when the header gave it
    (None: decoding stopped at the limit, so it is only known to be longer)."""

    def __init__(self, seconds: float | None, limit_s: float) -> None:
        lasts = f"{seconds:.1f} seconds" if seconds is not None else f"more than {limit_s:g} seconds"
        super().__init__(f"the audio lasts {lasts}; the limit is {limit_s:g} seconds")
        self.seconds = seconds
        self.limit_s = limit_s


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    if from_rate <= 0 or to_rate <= 0:
        raise AudioDecodeError(f"invalid sample rate {from_rate} -> {to_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate or audio.size == 0:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def decode_audio_file(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode anything libsndfile reads (wav, flac, ogg/vorbis/opus, mp3...) to float32 mono 16 kHz.

    `max_seconds`: the longest decoded duration accepted. A header that says more is refused before any
    decoding, and decoding stops as soon as it passes the limit (a header may lie, a stream may have none):
    a small upload of a compressed hour costs no more than the limit's worth of work."""
    if not data:
        raise AudioDecodeError("the audio file is empty")
    limit_s = math.inf if max_seconds is None else max_seconds
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = int(f.samplerate)
            if f.frames > limit_s * rate:
                raise AudioTooLongError(f.frames / rate, limit_s)
            mono = read_mono(f, limit_s * rate)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(
            f"could not decode the audio file ({exc}); send wav, flac, ogg or mp3"
        ) from exc
    if mono is None:
        raise AudioTooLongError(None, limit_s)
    if mono.size == 0:
        raise AudioDecodeError("the audio file contains no samples")
    return resample(mono, rate, SAMPLE_RATE)


def read_mono(f: sf.SoundFile, max_frames: float) -> np.ndarray | None:
    """Every frame as float32 mono, decoded block by block; None as soon as there are more than max_frames."""
    blocks: list[np.ndarray] = []
    frames = 0
    while (block := f.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
        frames += block.shape[0]
        if frames > max_frames:
            return None
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        if not np.all(np.isfinite(mono)):
            raise AudioDecodeError("the audio file contains invalid (non-finite) samples")
        blocks.append(mono.astype(np.float32, copy=False))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1). A trailing odd byte is an error."""
    if len(data) % 2:
        raise AudioDecodeError("PCM16 audio must have an even number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
