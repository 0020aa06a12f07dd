"""A vision-language model's prompt: chat messages (or raw text) and decoded media -> prompt token ids with
every item's placeholder tokens, and each item's processed features (engine/vision/inputs.py).

The model's own HF processor does the work: its chat template renders the messages (the HF multimodal
convention: content parts {"type": "text", "text"} and {"type": "image"} / {"type": "video"}, in the order of
the media list), then it resizes/tiles the images and expands each image's mark in the text to its tokens.
Its batched tensors are split here into one ProcessedMedia per item, so that each item can be encoded (and
its embeddings cached) on its own. Qwen2-VL videos are made by engine/vision/video_features.py (its video
processor needs torchvision); other families take no video.

All of it runs on a small pool of threads of its own: not the event loop, not the inference thread.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from engine.errors import InvalidParameter
from engine.llm.chat import REQUEST_TEMPLATE_TIMEOUT_S, chat_template_options, render_chat, render_chat_within
from engine.vision.inputs import MediaInput, MultimodalInputs, ProcessedMedia

PROMPT_THREADS = 2
QWEN2_VL_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")
MEDIA_PART_TYPES = ("image", "video")

_pool = ThreadPoolExecutor(PROMPT_THREADS, thread_name_prefix="rtserve-vision-prompt")


def _content_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with string content as one text part (the multimodal templates iterate parts)."""
    out = []
    for message in messages:
        content = message.get("content")
        out.append(
            {**message, "content": [{"type": "text", "text": content}]}
            if isinstance(content, str)
            else message
        )
    return out


def _check_parts(messages: list[dict[str, Any]], media: list[MediaInput]) -> None:
    kinds = [
        part.get("type")
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") in MEDIA_PART_TYPES
    ]
    if kinds != [item.kind for item in media]:
        raise InvalidParameter(
            "messages", f"the messages mark {len(kinds)} media items, but {len(media)} came"
        )


def _encode_with_videos(
    processor: Any, text: str, media: list[MediaInput], param: str
) -> tuple[list[int], MultimodalInputs]:
    """Qwen2-VL with videos: its processor refuses video tokens without its video processor (torchvision),
    so engine/vision/video_features.py makes the prompt as the processor's __call__ would."""
    if type(processor).__name__ not in QWEN2_VL_PROCESSORS:
        raise InvalidParameter(param, "This model reads images, not video", code="unsupported_content_type")
    from engine.vision.video_features import encode_qwen2_vl_prompt

    ids, items = encode_qwen2_vl_prompt(processor, text, media, param)
    return ids, MultimodalInputs(items)


def _idefics3_image_tokens(ids: list[int], image_id: int, global_id: int) -> list[int]:
    """Each image's `<image>` tokens: its tiles' runs, the last one (its global image) after `<global-img>`."""
    counts: list[int] = []
    count, closing = 0, False
    for token in ids:
        if token == image_id:
            count += 1
        elif closing:
            counts.append(count)
            count, closing = 0, False
        if token == global_id:
            closing = True
    if closing:
        counts.append(count)
    return counts


def _split_images(
    processor: Any, batch: Any, images: list[MediaInput], ids: list[int]
) -> list[ProcessedMedia]:
    """The processor's batched image tensors, one ProcessedMedia per image (a layout per family)."""
    if not images:
        return []
    pixels: torch.Tensor = batch["pixel_values"]
    placeholders = sum(1 for token in ids if token == processor.image_token_id)
    if "image_grid_thw" in batch:  # Qwen2-VL: patch rows, merge_size^2 of them per token
        grids = batch["image_grid_thw"]
        rows = grids.prod(-1).tolist()
        merge = processor.image_processor.merge_size
        features = [
            {"pixel_values": p, "image_grid_thw": grids[i : i + 1]} for i, p in enumerate(pixels.split(rows))
        ]
        tokens = [r // merge**2 for r in rows]
    elif pixels.dim() == 5:  # Idefics3: [1, tiles, 3, H, W], image_seq_len tokens per tile
        tokens = _idefics3_image_tokens(ids, processor.image_token_id, processor.global_image_token_id)
        tiles = [n // processor.image_seq_len for n in tokens]
        mask = batch.get("pixel_attention_mask")
        mask = (
            mask[0] if mask is not None else torch.ones(pixels.shape[1], *pixels.shape[3:], dtype=torch.bool)
        )
        features = [
            {"pixel_values": p, "pixel_attention_mask": m}
            for p, m in zip(pixels[0].split(tiles), mask.split(tiles), strict=True)
        ]
    else:  # LLaVA: one fixed-size crop per image, the same number of tokens each
        tokens = [placeholders // len(images)] * len(images)
        features = [{"pixel_values": p} for p in pixels.split(1)]
    if len(features) != len(images) or sum(tokens) != placeholders:
        raise InvalidParameter("messages", "the model's processor did not make one set of tokens per image")
    return [
        ProcessedMedia("image", m.content_hash, f, n)
        for m, f, n in zip(images, features, tokens, strict=True)
    ]


def _processed(
    processor: Any, text: str, media: list[MediaInput], param: str
) -> tuple[list[int], MultimodalInputs]:
    images = [item for item in media if item.kind == "image"]
    videos = [item for item in media if item.kind == "video"]
    marks = text.count(processor.image_token)
    if marks != len(images):
        raise InvalidParameter(param, f"the prompt marks {marks} images, but {len(images)} came")
    if videos:
        return _encode_with_videos(processor, text, media, param)
    kwargs: dict[str, Any] = {}
    bos = processor.tokenizer.bos_token
    if bos and text.startswith(bos):  # the template wrote it (as the processor's apply_chat_template does)
        kwargs["add_special_tokens"] = False
    images_in = [item.frames[0] for item in images] or None
    batch = processor(text=[text], images=images_in, return_tensors="pt", **kwargs)
    ids = batch["input_ids"][0].tolist()
    return ids, MultimodalInputs(_split_images(processor, batch, images, ids))


def _process(
    processor: Any, text: str, media: list[MediaInput], param: str
) -> tuple[list[int], MultimodalInputs]:
    try:
        return _processed(processor, text, media, param)
    except InvalidParameter:
        raise
    except Exception as exc:  # the processor's own checks (sizes, aspect ratios, token counts)
        raise InvalidParameter(param, f"The model's processor could not read the media: {exc}") from exc


def _encode_chat(
    processor: Any,
    messages: list[dict[str, Any]],
    media: list[MediaInput],
    chat_template: str | None,
    template_kwargs: dict[str, Any] | None,
    add_generation_prompt: bool,
    continue_final_message: bool,
    tools: list[dict[str, Any]] | None,
) -> tuple[list[int], MultimodalInputs]:
    messages = _content_parts(messages)
    _check_parts(messages, media)
    kwargs = chat_template_options(template_kwargs, tools, continue_final_message)
    if chat_template is None:
        text = render_chat(processor, messages, None, kwargs, add_generation_prompt)
    else:
        text = render_chat_within(
            processor, messages, chat_template, kwargs, add_generation_prompt, REQUEST_TEMPLATE_TIMEOUT_S
        )
    return _process(processor, text, media, "messages")


async def encode_vision_chat_async(
    processor: Any,
    messages: list[dict[str, Any]],
    media: list[MediaInput],
    *,
    chat_template: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[list[int], MultimodalInputs]:
    """Render the processor's chat template over `messages` (HF multimodal parts, `media` in their order),
    run the processor, and split its output per item. `chat_template`: a request's own template (rendered
    under a deadline, as engine/llm/chat.py does); continue_final_message: the last message left open for
    the model to continue. Raises InvalidParameter("messages", ...) for media the
    processor rejects, parts that do not match the media, or video to a model without it."""
    job = functools.partial(
        _encode_chat, processor, messages, media, chat_template, template_kwargs, add_generation_prompt,
        continue_final_message, tools,
    )  # fmt: skip
    return await asyncio.get_running_loop().run_in_executor(_pool, job)


async def encode_vision_prompt_async(
    processor: Any, text: str, media: list[MediaInput]
) -> tuple[list[int], MultimodalInputs]:
    """A raw prompt (/generate) in which each image is marked by the family's image token
    (EngineClient.vision.image_token) and each video by its video token, in the order of `media`."""
    job = functools.partial(_process, processor, text, media, "prompt")
    return await asyncio.get_running_loop().run_in_executor(_pool, job)
