"""Speech audio as the client asked for it: 24 kHz mono (as OpenAI's /v1/audio/speech) in mp3, opus (Ogg),
aac (ADTS), flac, wav or raw pcm (16-bit LE), encoded piece by piece so the bytes can stream.

Every container is written by PyAV (FFmpeg) to a sink that cannot seek, so nothing waits for the end:
wav and flac then carry "unknown length" headers, as OpenAI's streamed wav does."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import av
import numpy as np

from audio.decode import resample

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
OUTPUT_RATE = 24000
CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# format -> (FFmpeg container, codec, sample format the codec takes, bit rate or None)
_CODECS: dict[str, tuple[str, str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", "s16p", 64_000),
    "opus": ("ogg", "libopus", "s16", 32_000),
    "aac": ("adts", "aac", "fltp", 64_000),
    "flac": ("flac", "flac", "s16", None),
    "wav": ("wav", "pcm_s16le", "s16", None),
}


class _Sink:
    """A write-only file for PyAV: what the muxer wrote since the last drain()."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def to_output_rate(pcm16: bytes, sample_rate: int) -> np.ndarray:
    """PCM16 at the voice's rate -> int16 samples at OUTPUT_RATE."""
    audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    audio = resample(audio, sample_rate, OUTPUT_RATE)
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


class SpeechEncoder:
    """encode() each piece's samples in order and send what it returns; finish() once for the tail."""

    def __init__(self, response_format: SpeechFormat) -> None:
        self.response_format = response_format
        self._pts = 0
        self._container: av.container.OutputContainer | None = None
        if response_format == "pcm":
            return
        container_format, codec, _, bit_rate = _CODECS[response_format]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=container_format)
        self._stream = self._container.add_stream(codec, rate=OUTPUT_RATE, layout="mono")
        if bit_rate:
            self._stream.bit_rate = bit_rate

    def encode(self, samples: np.ndarray) -> bytes:
        """int16 mono samples at OUTPUT_RATE -> the next bytes of the file."""
        if self._container is None:
            return samples.astype("<i2").tobytes()
        if samples.size == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = OUTPUT_RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, OUTPUT_RATE)
        self._pts += samples.size
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.drain()

    def finish(self) -> bytes:
        if self._container is None:
            return b""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return self._sink.drain()

    def close(self) -> None:
        """Abandon the file (the request failed or the client left)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the muxer may refuse to finish a file it never started
                pass
            self._container = None
