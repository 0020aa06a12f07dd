"""Idefics3 (SmolVLM) as a VisionFamily: the HF model's SigLIP tower and connector (pixel shuffle + projection)
encode the tiles of every image in a prefill step; its Llama text decoder runs in our paged forward.

An item's processed features are its tiles: `pixel_values` [tiles, 3, H, W] and `pixel_attention_mask`
[tiles, H, W] (what the processor made of the image alone: the split tiles, then the global image). Each tile
fills `image_seq_len` `<image>` tokens. Tiles of one size are encoded together (the processor makes them all
the same size unless splitting is off); positions are plain indices.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from engine.models.vision.llama_text import IndexPositionFamily, same_shape_groups
from engine.vision.inputs import ProcessedMedia, VisionInfo

IMAGE_TOKEN = "<image>"  # a raw prompt's mark for one image; the processor expands it to the tiles' tokens


class Idefics3Family(IndexPositionFamily):
    def __init__(self, model: PreTrainedModel) -> None:
        info = VisionInfo(family="idefics3", image_token=IMAGE_TOKEN, video_token=None)
        super().__init__(model, info, model.model.text_model)

    @torch.inference_mode()
    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        tiles = [item.features["pixel_values"] for item in items]
        masks = [item.features["pixel_attention_mask"] for item in items]
        out: list[torch.Tensor | None] = [None] * len(items)
        for indices in same_shape_groups(items):
            pixels = torch.cat([tiles[i] for i in indices]).to(self.device)
            mask = torch.cat([masks[i] for i in indices]).to(self.device)
            features = self.vlm.get_image_features(
                pixels[None], pixel_attention_mask=mask[None]
            ).pooler_output
            flat = torch.cat(list(features)).to(self.dtype)
            for i, embeddings in zip(
                indices, flat.split([items[i].num_tokens for i in indices]), strict=True
            ):
                out[i] = embeddings
        return [e for e in out if e is not None]


def build_family(model: PreTrainedModel) -> Idefics3Family:
    return Idefics3Family(model)
