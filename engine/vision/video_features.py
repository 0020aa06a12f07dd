"""Qwen2-VL / Qwen2.5-VL video features without torchvision.

transformers' Qwen2VLVideoProcessor imports torchvision, which cannot run beside our torch, so this module
follows its steps on PIL frames instead:

1. every frame is resized to `smart_resize(h, w, factor=patch_size * merge_size, min_pixels, max_pixels)`
   with PIL bicubic (the processor's resample; torchvision's antialiased uint8 bicubic follows PIL's, and
   the HF image processors' PIL backend resizes the same way);
2. rescale and normalise fused, in fp32: (x - mean / rescale_factor) / (std / rescale_factor);
3. the frame count is padded to a multiple of `temporal_patch_size` by repeating the last frame;
4. patchify: (t, tp, C, gh/m, m, ph, gw/m, m, pw) -> rows (t, gh/m, gw/m, m, m), columns (C, tp, ph, pw).

The interface (engine/vision/prompt.py calls it for each video item):

    features, num_tokens = qwen2_vl_video_features(processor, frames, fps)

`processor` is the model's HF processor: the geometry (patch/merge/temporal sizes, min/max pixels, mean/std,
rescale factor) comes from its `video_processor` when it has one, else from its `image_processor` (the same
vision tower; without torchvision the processor carries no video processor). `frames` are RGB PIL images as
sampled by the front end (MediaInput.frames) and `fps` the rate they were sampled at (MediaInput.fps; None:
one second per temporal patch, transformers' default). `features` holds `pixel_values_videos`
[t * gh * gw, C * tp * ph * pw] fp32, `video_grid_thw` [1, 3] and `second_per_grid_ts` [1] (Qwen2.5-VL's
temporal spacing, temporal_patch_size / fps, as its processor computes it); `num_tokens` is the number of
`<|video_pad|>` tokens the item fills in the prompt (t * gh * gw / merge_size^2): the prompt builder expands
the chat template's one video token to that many before tokenising.

A Qwen2-VL processor without a video processor refuses text holding its video token, so a prompt with
videos is made here the way its `__call__` makes one: each image through its image processor, each video
through `qwen2_vl_video_features`, every placeholder expanded in order, then the tokenizer:

    prompt_token_ids, items = encode_qwen2_vl_prompt(processor, text, media, param="messages")

`text` is the rendered prompt (the chat template's output, or a raw /generate prompt) holding the
processor's `image_token` / `video_token` once per item, in the order of `media` (MediaInput list).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from engine.errors import InvalidParameter
from engine.vision.inputs import MediaInput, ProcessedMedia

MAX_ASPECT_RATIO = 200  # smart_resize refuses longer/shorter edge ratios above this


@dataclass(frozen=True)
class VideoGeometry:
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    rescale_factor: float

    @classmethod
    def of(cls, processor: Any) -> VideoGeometry:
        source = getattr(processor, "video_processor", None) or processor.image_processor
        size = source.size
        return cls(
            patch_size=int(source.patch_size),
            temporal_patch_size=int(source.temporal_patch_size),
            merge_size=int(source.merge_size),
            min_pixels=int(size["shortest_edge"]),
            max_pixels=int(size["longest_edge"]),
            image_mean=tuple(source.image_mean),
            image_std=tuple(source.image_std),
            rescale_factor=float(source.rescale_factor),
        )


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Both sides a multiple of `factor`, the area within [min_pixels, max_pixels], the aspect ratio kept
    as closely as possible (Qwen2-VL's processors)."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidParameter(
            "messages", f"a video's aspect ratio must be under {MAX_ASPECT_RATIO}, got {width}x{height}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _normalised_frames(frames: list[Image.Image], geometry: VideoGeometry) -> torch.Tensor:
    """[T, C, H, W] fp32: every frame resized and normalised."""
    first = frames[0]
    height, width = smart_resize(
        first.height, first.width, geometry.patch_size * geometry.merge_size,
        geometry.min_pixels, geometry.max_pixels,
    )  # fmt: skip
    pixels = []
    for frame in frames:
        if frame.mode != "RGB":
            frame = frame.convert("RGB")
        resized = frame.resize((width, height), resample=Image.Resampling.BICUBIC)
        pixels.append(
            torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8).view(height, width, 3)
        )
    video = torch.stack(pixels).permute(0, 3, 1, 2).to(torch.float32)
    mean = torch.tensor(geometry.image_mean) * (1.0 / geometry.rescale_factor)
    std = torch.tensor(geometry.image_std) * (1.0 / geometry.rescale_factor)
    return video.sub_(mean[:, None, None]).div_(std[:, None, None])


def patchify(video: torch.Tensor, geometry: VideoGeometry) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[T, C, H, W] -> ([grid_t * grid_h * grid_w, C * tp * p * p], (grid_t, grid_h, grid_w))."""
    tp, p, m = geometry.temporal_patch_size, geometry.patch_size, geometry.merge_size
    if pad := -video.shape[0] % tp:
        video = torch.cat((video, video[-1:].expand(pad, -1, -1, -1)), dim=0)
    frames, channels, height, width = video.shape
    grid_t, grid_h, grid_w = frames // tp, height // p, width // p
    patches = video.reshape(grid_t, tp, channels, grid_h // m, m, p, grid_w // m, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(grid_t * grid_h * grid_w, channels * tp * p * p), (grid_t, grid_h, grid_w)


def video_features_from_frames(
    frames: list[Image.Image], geometry: VideoGeometry, fps: float | None
) -> tuple[dict[str, torch.Tensor], int]:
    if not frames:
        raise InvalidParameter("messages", "a video needs at least one frame")
    if any(frame.size != frames[0].size for frame in frames):
        raise InvalidParameter("messages", "a video's frames must all have the same size")
    pixels, grid = patchify(_normalised_frames(frames, geometry), geometry)
    seconds_per_grid = geometry.temporal_patch_size / fps if fps else 1.0
    features = {
        "pixel_values_videos": pixels,
        "video_grid_thw": torch.tensor([grid], dtype=torch.long),
        "second_per_grid_ts": torch.tensor([seconds_per_grid], dtype=torch.float32),
    }
    return features, math.prod(grid) // geometry.merge_size**2


def qwen2_vl_video_features(
    processor: Any, frames: list[Image.Image], fps: float | None
) -> tuple[dict[str, torch.Tensor], int]:
    """One video's features and placeholder count for a Qwen2-VL / Qwen2.5-VL processor (module docstring)."""
    return video_features_from_frames(frames, VideoGeometry.of(processor), fps)


def _processed(processor: Any, media: MediaInput, param: str) -> ProcessedMedia:
    if media.kind == "video":
        features, num_tokens = qwen2_vl_video_features(processor, media.frames, media.fps)
        return ProcessedMedia("video", media.content_hash, features, num_tokens)
    image_processor = processor.image_processor
    try:
        features = dict(image_processor(images=media.frames[:1], return_tensors="pt"))
    except ValueError as exc:  # the processor's own checks (aspect ratio)
        raise InvalidParameter(param, f"The model's processor could not read an image: {exc}") from exc
    num_tokens = int(features["image_grid_thw"].prod()) // image_processor.merge_size**2
    return ProcessedMedia("image", media.content_hash, features, num_tokens)


def encode_qwen2_vl_prompt(
    processor: Any, text: str, media: list[MediaInput], param: str = "messages"
) -> tuple[list[int], list[ProcessedMedia]]:
    """A Qwen2-VL / Qwen2.5-VL prompt with images and videos: token ids (placeholders expanded) and the
    processed items in prompt order (module docstring). `param`: the request field errors name."""
    tokens = {"image": processor.image_token, "video": processor.video_token}
    marks = "|".join(re.escape(token) for token in tokens.values())
    kinds = ["image" if token == tokens["image"] else "video" for token in re.findall(marks, text)]
    if kinds != [item.kind for item in media]:
        raise InvalidParameter(
            param, f"the prompt marks media {kinds}, but the request carries {[item.kind for item in media]}"
        )
    items = [_processed(processor, item, param) for item in media]
    pieces = re.split(marks, text)
    expanded = [pieces[0]]
    for item, piece in zip(items, pieces[1:], strict=True):
        expanded += [tokens[item.kind] * item.num_tokens, piece]
    return list(processor.tokenizer("".join(expanded))["input_ids"]), items
