"""Qwen2-VL and Qwen2.5-VL as a VisionFamily: the HF model's vision tower encodes every image and video of a
prefill step in one pass; its Qwen2 text decoder runs in our paged forward with M-RoPE positions
(engine/models/mrope.py).

An item's processed features are what the HF processor makes of it alone: `pixel_values` + `image_grid_thw`
for an image, `pixel_values_videos` + `video_grid_thw` (+ `second_per_grid_ts` for Qwen2.5-VL) for a video
(engine/vision/video_features.py). Both kinds are patch rows of the same width, so the tower takes them
together; its attention never crosses from one item (or video frame) to another.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from engine.models.mrope import GridItem, MRotaryEmbedding, mrope_positions
from engine.vision.inputs import ProcessedMedia, VisionInfo

FAMILIES = ("qwen2_vl", "qwen2_5_vl")
# how a raw prompt (/generate) marks one image or video: the processor expands the pad token to the
# item's embedding count (SGLang's Qwen2-VL convention)
IMAGE_TOKEN = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO_TOKEN = "<|vision_start|><|video_pad|><|vision_end|>"


def _grid(item: ProcessedMedia) -> torch.Tensor:
    return item.features["image_grid_thw" if item.kind == "image" else "video_grid_thw"]


def _grid_thw(item: ProcessedMedia) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in _grid(item).reshape(3).tolist())
    return t, h, w


def _pixels(item: ProcessedMedia) -> torch.Tensor:
    return item.features["pixel_values" if item.kind == "image" else "pixel_values_videos"]


class Qwen2VLFamily:
    def __init__(self, model: PreTrainedModel) -> None:
        config = model.config
        if config.model_type not in FAMILIES:
            raise ValueError(f"not a Qwen2-VL model: {config.model_type!r}")
        if getattr(config.text_config, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported by the paged runner")
        self.info = VisionInfo(family=config.model_type, image_token=IMAGE_TOKEN, video_token=VIDEO_TOKEN)
        self.text_config: PretrainedConfig = config.text_config
        self.text_model: torch.nn.Module = model.model.language_model
        self.lm_head: torch.nn.Module = model.lm_head
        self.visual: torch.nn.Module = model.model.visual
        self.image_token_id = int(config.image_token_id)
        self.video_token_id = int(config.video_token_id)
        self.placeholder_token_ids = frozenset({self.image_token_id, self.video_token_id})
        self.spatial_merge_size = int(config.vision_config.spatial_merge_size)
        # Qwen2.5-VL spaces a video's temporal positions by tokens_per_second * seconds per grid step
        self.tokens_per_second: int | None = getattr(config.vision_config, "tokens_per_second", None)
        if config.model_type == "qwen2_vl":
            self.tokens_per_second = None
        parameter = next(self.text_model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype

    def rotary(self, max_positions: int) -> MRotaryEmbedding:
        # angles are computed per step from the positions, so no table sized by max_positions
        return MRotaryEmbedding(self.text_config, self.device, self.dtype)

    @torch.inference_mode()
    def encode(self, items: list[ProcessedMedia]) -> list[torch.Tensor]:
        if not items:
            return []
        visual_dtype = next(self.visual.parameters()).dtype
        pixels = torch.cat([_pixels(item).to(self.device, visual_dtype) for item in items])
        grids = torch.cat([_grid(item).reshape(-1, 3) for item in items]).to(self.device)
        embeddings = self.visual(pixels, grid_thw=grids).pooler_output
        sizes = (grids.prod(-1) // self.spatial_merge_size**2).tolist()
        return [e.to(self.dtype) for e in embeddings.split(sizes)]

    def _time_interval(self, item: ProcessedMedia) -> float:
        if item.kind != "video" or self.tokens_per_second is None:
            return 1.0
        seconds = item.features.get("second_per_grid_ts")
        seconds_per_grid = torch.as_tensor(1.0 if seconds is None else seconds, dtype=torch.float32)
        # fp32 product, as transformers' get_rope_index computes it
        return float(self.tokens_per_second * seconds_per_grid.reshape(-1)[0])

    def prompt_positions(
        self, prompt_token_ids: list[int], items: list[ProcessedMedia]
    ) -> tuple[torch.Tensor, int]:
        grids = [GridItem(_grid_thw(item), self._time_interval(item)) for item in items]
        return mrope_positions(prompt_token_ids, self.placeholder_token_ids, grids, self.spatial_merge_size)


def build_family(model: PreTrainedModel) -> Qwen2VLFamily:
    return Qwen2VLFamily(model)
