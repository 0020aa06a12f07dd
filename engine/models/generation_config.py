"""Default sampling values for requests that leave them unset, as vLLM's `--generation-config` reads them.

`auto`: the model's own. A Hugging Face model's generation_config.json; a GGUF file's `general.sampling.*`
metadata; and for an embedded model, the defaults shipped beside this module
(generation_defaults/<name>.json), measured on the weights we serve (clients/measure_generation_defaults.py;
the README says what was chosen and why). `none`: no defaults (temperature 1, top_p 1). A path: that
generation_config.json, or the one in that directory. `--override-generation-config` applies last, and a
request's own values always win (the HTTP routes apply these only where a request leaves a field unset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidParameter
from engine.sampling import SamplingParams

# generation_config.json's names -> SamplingParams' names
HF_KEYS: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}
# GGUF metadata keys -> generation_config.json's names
GGUF_KEYS: dict[str, str] = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}
SHIPPED_DIR = Path(__file__).with_name("generation_defaults")
INTEGER_KEYS = frozenset({"top_k", "max_tokens"})


@dataclass(frozen=True)
class GenerationDefaults:
    values: dict[str, float | int]  # SamplingParams field names: temperature, top_p, top_k, min_p, ...
    source: str  # where they came from, for the startup log

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.values.items()) or "none (temperature 1, top_p 1)"
        return f"{shown} (from {self.source})"


def sampling_values(raw: Mapping[str, Any], where: str) -> dict[str, float | int]:
    """The sampling keys of a generation_config mapping, by SamplingParams' names; other keys are ignored."""
    values: dict[str, float | int] = {}
    for hf_name, name in HF_KEYS.items():
        value = raw.get(hf_name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: {hf_name} must be a number, got {value!r}")
        values[name] = int(value) if name in INTEGER_KEYS else float(value)
    return values


def parse_override(text: str) -> dict[str, float]:
    """`--override-generation-config`'s JSON object (generation_config.json's names); unknown keys fail."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object, e.g. '{\"temperature\": 0.5}'")
    unknown = sorted(set(raw) - set(HF_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(HF_KEYS)}")
    sampling_values(raw, "--override-generation-config")
    return raw


def read_generation_json(path: Path) -> dict[str, Any]:
    """A generation_config.json, given as the file or the directory that holds it."""
    file = path / "generation_config.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read generation config {file}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object")
    return raw


def gguf_sampling(path: Path) -> dict[str, Any]:
    """A GGUF file's general.sampling.* metadata, by generation_config.json's names."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    return {name: fields[key].contents() for key, name in GGUF_KEYS.items() if key in fields}


def model_defaults(spec: str, generation_config: Any) -> tuple[dict[str, Any], str]:
    """What `auto` reads: (generation_config.json-style mapping, its source)."""
    # imported here: it pulls in torch and transformers, which `rtserve --help` does not need
    from engine.models.llm_loader import embedded_gguf_path

    try:
        gguf_path = embedded_gguf_path(spec)
    except FileNotFoundError:
        gguf_path = None  # an embedded name whose package is gone (the converted cache still loads)
    raw: dict[str, Any] = {}
    source = "the model's generation_config.json"
    if gguf_path is not None:
        raw, source = gguf_sampling(gguf_path), f"{gguf_path.name} metadata"
    elif generation_config is not None:
        raw = {name: getattr(generation_config, name, None) for name in HF_KEYS}
    shipped = SHIPPED_DIR / f"{spec}.json"
    if shipped.is_file():
        raw = {**raw, **read_generation_json(shipped)}
        source = f"rtserve's measured defaults for {spec}, engine/models/generation_defaults/{shipped.name}"
    return raw, source


def resolve_generation_defaults(
    mode: str, override: Mapping[str, Any], spec: str, generation_config: Any, vocab_size: int
) -> GenerationDefaults:
    """`mode`: auto, none or a path (EngineConfig.generation_config). Raises ValueError for values no
    request could use (a temperature above 2, ...): the server refuses to start rather than fail every
    request."""
    if mode == "auto":
        raw, source = model_defaults(spec, generation_config)
    elif mode == "none":
        raw, source = {}, "--generation-config none"
    else:
        raw, source = read_generation_json(Path(mode)), mode
    values = sampling_values(raw, source)
    if override:
        values.update(sampling_values(override, "--override-generation-config"))
        source += " and --override-generation-config"
    try:
        SamplingParams(**values).validate(vocab_size)  # type: ignore[arg-type]
    except InvalidParameter as exc:
        raise ValueError(f"generation defaults from {source}: {exc.message}") from None
    return GenerationDefaults(values, source)
