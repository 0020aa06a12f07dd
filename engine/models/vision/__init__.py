"""Vision-language model families: a config's model_type -> the module that adapts that family.

Each module has `build_family(model) -> VisionFamily` (engine/models/vision/family.py). The modules are
imported only when a VLM is loaded. Adding a family: a module here (its text decoder must be Llama-shaped
for engine/models/paged_llama.py: embed_tokens, layers with q/k/v/o_proj and a gated MLP, norm) and a line
below; engine/vision/prompt.py splits its processor's output per item.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from engine.models.vision.family import VisionFamily

FAMILY_MODULES: dict[str, str] = {
    "idefics3": "engine.models.vision.idefics3",
    "llava": "engine.models.vision.llava",
    "qwen2_vl": "engine.models.vision.qwen2_vl",
    "qwen2_5_vl": "engine.models.vision.qwen2_vl",
}


def is_vision_model_type(model_type: str | None) -> bool:
    return model_type in FAMILY_MODULES


def build_vision_family(model: PreTrainedModel) -> VisionFamily:
    """The family adapter for a loaded AutoModelForImageTextToText model."""
    model_type = model.config.model_type
    if model_type not in FAMILY_MODULES:
        raise ValueError(f"vision-language model type {model_type!r} is not supported")
    module = importlib.import_module(FAMILY_MODULES[model_type])
    return module.build_family(model)
