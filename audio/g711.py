"""G.711 decoding (ITU-T G.711): 8-bit mu-law (PCMU) and A-law (PCMA) bytes to float32 samples."""

from __future__ import annotations

import numpy as np

G711_SAMPLE_RATE = 8000


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32) / 32768.0


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    # In A-law a set sign bit means a positive sample.
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float32) / 32768.0


_MULAW = _mulaw_table()
_ALAW = _alaw_table()


def decode_pcmu(data: bytes) -> np.ndarray:
    """mu-law bytes -> float32 in [-1, 1), one sample per byte."""
    return _MULAW[np.frombuffer(data, dtype=np.uint8)]


def decode_pcma(data: bytes) -> np.ndarray:
    """A-law bytes -> float32 in [-1, 1), one sample per byte."""
    return _ALAW[np.frombuffer(data, dtype=np.uint8)]


def encode_pcmu(samples: np.ndarray) -> bytes:
    """float32 -> mu-law bytes (for clients and tests that send telephone audio)."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def encode_pcma(samples: np.ndarray) -> bytes:
    """float32 -> A-law bytes."""
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int32)
    sign = np.where(pcm >= 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), 32767)
    exponent = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 7, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 4, magnitude >> (exponent + 3)) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()
