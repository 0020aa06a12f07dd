"""Whisper's log-mel spectrogram in torch, batched (matches transformers' WhisperFeatureExtractor)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from audio.constants import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in one 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] slaney mel filter bank."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(bank.T, dtype=np.float32))


@lru_cache(maxsize=2)
def _hann_window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def pad_batch(audios: list[np.ndarray], num_samples: int) -> torch.Tensor:
    """Zero-pad (or cut) every clip to `num_samples` and stack them: [B, num_samples] float32."""
    batch = torch.zeros(len(audios), num_samples, dtype=torch.float32)
    for row, audio in enumerate(audios):
        n = min(len(audio), num_samples)
        batch.numpy()[row, :n] = audio[:n]
    return batch


def log_mel_spectrogram(waveforms: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """[B, S] float32 waveforms -> [B, n_mels, S // 160] log-mel features, normalized per clip."""
    stft = torch.stft(waveforms, N_FFT, HOP_LENGTH, window=_hann_window(), return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    mel = mel_filters(n_mels) @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0
