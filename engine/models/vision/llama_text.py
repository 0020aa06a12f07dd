"""What the families with a Llama-shaped text decoder and plain index positions share (Idefics3, LLaVA): the
parts the paged forward reads, Llama's RoPE, and the grouping of items whose pixels can go through the vision
tower in one pass (same shape)."""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from engine.models.paged_llama import LlamaRotary
from engine.vision.inputs import ProcessedMedia, VisionInfo


class IndexPositionFamily:
    def __init__(self, model: PreTrainedModel, info: VisionInfo, text_model: torch.nn.Module) -> None:
        config = model.config
        self.config = config
        self.info = info
        self.text_config: PretrainedConfig = config.text_config
        self.vlm: torch.nn.Module = model.model  # its get_image_features: vision tower + connector/projector
        self.text_model = text_model
        self.lm_head: torch.nn.Module = model.lm_head
        self.placeholder_token_ids = frozenset({int(config.image_token_id)})
        parameter = next(self.text_model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def rotary(self, max_positions: int) -> LlamaRotary:
        return LlamaRotary(self.text_config, max_positions, self.device, self.dtype)

    def prompt_positions(
        self, prompt_token_ids: list[int], items: list[ProcessedMedia]
    ) -> tuple[torch.Tensor, int]:
        return torch.arange(len(prompt_token_ids)), 0


def same_shape_groups(items: list[ProcessedMedia]) -> list[list[int]]:
    """Indices of the items whose pixel_values share a shape (past the first axis), in order of first sight."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(tuple(item.features["pixel_values"].shape[1:]), []).append(i)
    return list(groups.values())
