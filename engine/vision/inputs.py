"""Images and videos on their way into the LLM: what a front end hands the engine, and what the model's
processor makes of them. No torch here: the LLM scheduler carries these without looking inside."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MediaKind = Literal["image", "video"]


@dataclass(frozen=True)
class MediaInput:
    """One decoded image or video, as a front end hands it to the engine (before the model's processor)."""

    kind: MediaKind
    frames: list[Any]  # PIL.Image.Image in RGB: one for an image, the sampled frames for a video
    content_hash: str  # sha256 hex of the source bytes; with the kind, the image-embedding cache key
    detail: str | None = None  # OpenAI's "auto" | "low" | "high": accepted; the model's processor sizes it
    fps: float | None = None  # a video's frames per second as sampled (Qwen2-VL's temporal positions)


@dataclass
class ProcessedMedia:
    """One image or video after the model's processor: what its vision tower reads, and how many prompt
    positions (placeholder tokens, in prompt order) its embeddings fill."""

    kind: MediaKind
    content_hash: str
    features: dict[
        str, Any
    ]  # the processor's tensors for this item alone (pixel_values, image_grid_thw, ...)
    num_tokens: int


@dataclass
class MultimodalInputs:
    """A prompt's media, in prompt order. The prompt token ids already hold each item's placeholder tokens
    (the processor expanded them); the runner splices each item's embeddings over its placeholders."""

    items: list[ProcessedMedia]

    @property
    def num_images(self) -> int:
        return sum(1 for item in self.items if item.kind == "image")


@dataclass(frozen=True)
class VisionInfo:
    """What a front end needs to know of a vision-language LLM (EngineClient.vision; None: text only)."""

    family: str  # "idefics3", "qwen2_vl", "qwen2_5_vl", "llava"
    image_token: str  # the text placeholder for one image in a raw prompt (/generate with image_data)
    video_token: str | None  # None: the model takes no video
