"""LLaVA as a VisionFamily: the HF model's vision tower (a chosen hidden layer, CLS dropped or kept as the
config says) and multimodal projector encode every image of a prefill step in one pass; its text decoder
(Llama-shaped) runs in our paged forward with plain index positions.

An item's processed features: `pixel_values` [1, 3, H, W] (the processor's fixed-size crop), filling one
`<image>` token per patch (+1 with the "full" feature strategy).
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from engine.models.paged_llama import LlamaRotary
from engine.vision.inputs import ProcessedMedia, VisionInfo

IMAGE_TOKEN = "<image>"


class LlavaFamily:
    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        self.config = config
        self.info = VisionInfo(family="llava", image_token=IMAGE_TOKEN, video_token=None)
        self.text_config: PretrainedConfig = config.text_config
        self.vlm: torch.nn.Module = model.model  # get_image_features: vision tower + projector
        self.text_model: torch.nn.Module = model.model.language_model
        self.lm_head: torch.nn.Module = model.lm_head
        self.placeholder_token_ids = frozenset({int(config.image_token_id)})
        parameter = next(self.text_model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def rotary(self, max_positions: int) -> LlamaRotary:
        return LlamaRotary(self.text_config, max_positions, self.device, self.dtype)

    @torch.inference_mode()
    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            by_size.setdefault(tuple(item.features["pixel_values"].shape[1:]), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for indices in by_size.values():
            pixels = torch.cat([items[i].features["pixel_values"] for i in indices]).to(self.device)
            features = self.vlm.get_image_features(
                pixel_values=pixels,
                vision_feature_layer=self.config.vision_feature_layer,
                vision_feature_select_strategy=self.config.vision_feature_select_strategy,
            ).pooler_output
            for i, embeddings in zip(indices, features, strict=True):
                out[i] = embeddings.reshape(-1, embeddings.shape[-1]).to(self.dtype)
        return [e for e in out if e is not None]

    def prompt_positions(
        self, prompt_token_ids: list[int], items: list[ProcessedMedia]
    ) -> tuple[torch.Tensor, int]:
        return torch.arange(len(prompt_token_ids)), 0


def build_family(model: PreTrainedModel) -> LlavaFamily:
    return LlavaFamily(model)
