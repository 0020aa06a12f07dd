"""Idefics3 (SmolVLM) as a VisionFamily: the HF model's SigLIP tower and connector (pixel shuffle + projection)
encode the tiles of every image in a prefill step; its Llama text decoder runs in our paged forward.

An item's processed features are its tiles: `pixel_values` [tiles, 3, H, W] and `pixel_attention_mask`
[tiles, H, W] (what the processor made of the image alone: the split tiles, then the global image). Each tile
fills `image_seq_len` `<image>` tokens. Tiles of one size are encoded together (the processor makes them all
the same size unless splitting is off); positions are plain indices.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from engine.models.paged_llama import LlamaRotary
from engine.vision.inputs import ProcessedMedia, VisionInfo

IMAGE_TOKEN = "<image>"  # a raw prompt's mark for one image; the processor expands it to the tiles' tokens


class Idefics3Family:
    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        self.info = VisionInfo(family="idefics3", image_token=IMAGE_TOKEN, video_token=None)
        self.text_config: PretrainedConfig = config.text_config
        self.vlm: torch.nn.Module = model.model  # get_image_features: vision tower + connector
        self.text_model: torch.nn.Module = model.model.text_model
        self.lm_head: torch.nn.Module = model.lm_head
        self.placeholder_token_ids = frozenset({int(config.image_token_id)})
        parameter = next(self.text_model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def rotary(self, max_positions: int) -> LlamaRotary:
        return LlamaRotary(self.text_config, max_positions, self.device, self.dtype)

    @torch.inference_mode()
    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        tiles = [item.features["pixel_values"] for item in items]
        masks = [item.features["pixel_attention_mask"] for item in items]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, pixels in enumerate(tiles):
            by_size.setdefault(tuple(pixels.shape[1:]), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for indices in by_size.values():
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

    def prompt_positions(
        self, prompt_token_ids: list[int], items: list[ProcessedMedia]
    ) -> tuple[torch.Tensor, int]:
        return torch.arange(len(prompt_token_ids)), 0


def build_family(model: PreTrainedModel) -> Idefics3Family:
    return Idefics3Family(model)
