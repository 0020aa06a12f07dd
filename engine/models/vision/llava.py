"""LLaVA as a VisionFamily: the HF model's vision tower (a chosen hidden layer, CLS dropped or kept as the
config says) and multimodal projector encode every image of a prefill step in one pass; its text decoder
(Llama-shaped) runs in our paged forward with plain index positions.

An item's processed features: `pixel_values` [1, 3, H, W] (the processor's fixed-size crop), filling one
`<image>` token per patch (+1 with the "full" feature strategy).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from engine.models.vision.llama_text import IndexPositionFamily, same_shape_groups
from engine.vision.inputs import ProcessedMedia, VisionInfo

IMAGE_TOKEN = "<image>"


class LlavaFamily(IndexPositionFamily):
    def __init__(self, model: PreTrainedModel) -> None:
        info = VisionInfo(family="llava", image_token=IMAGE_TOKEN, video_token=None)
        super().__init__(model, info, model.model.language_model)

    @torch.inference_mode()
    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(items)
        for indices in same_shape_groups(items):
            pixels = torch.cat([items[i].features["pixel_values"] for i in indices]).to(self.device)
            features = self.vlm.get_image_features(
                pixel_values=pixels,
                vision_feature_layer=self.config.vision_feature_layer,
                vision_feature_select_strategy=self.config.vision_feature_select_strategy,
            ).pooler_output
            for i, embeddings in zip(indices, features, strict=True):
                out[i] = embeddings.reshape(-1, embeddings.shape[-1]).to(self.dtype)
        return [e for e in out if e is not None]


def build_family(model: PreTrainedModel) -> LlavaFamily:
    return LlavaFamily(model)
