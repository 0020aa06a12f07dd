"""Images and videos in LLM requests: content parts -> media references (kind, URL, the request field)
-> the engine's MediaInput, fetched (http_api/media_fetch.py) and decoded (http_api/media_decode.py,
http_api/video_frames.py) off the event loop, within the server's MediaLimits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine.vision.inputs import MediaInput, MediaKind
from http_api.errors import APIError, bad_request, unsupported
from http_api.limits import MediaLimits
from http_api.media_decode import decode_image
from http_api.media_fetch import fetch_media_bytes
from http_api.video_frames import decode_video

IMAGE_PART_TYPES = ("image_url", "input_image")
VIDEO_PART_TYPES = ("video_url",)
DETAILS = ("auto", "low", "high")


@dataclass(frozen=True)
class MediaRef:
    """One image or video a request refers to, in prompt order."""

    kind: MediaKind
    url: str
    param: str  # the request field it came from: messages[0].content[1].image_url
    detail: str | None = None


def media_ref(part: dict[str, Any], where: str) -> MediaRef:
    """An image_url / input_image / video_url content part: the URL as a string or {url, detail}."""
    kind = part.get("type")
    field = "video_url" if kind in VIDEO_PART_TYPES else "image_url"
    param = f"{where}.{field}"
    if kind == "input_image" and part.get("file_id") is not None:
        raise unsupported(f"{where}.file_id", "send the image as image_url (a data: or http(s) URL)")
    value = part.get(field)
    detail = part.get("detail")
    if isinstance(value, dict):
        url, detail = value.get("url"), value.get("detail", detail)
    else:
        url = value
    if not isinstance(url, str) or not url:
        raise bad_request(
            f"{param} must be a URL string or {{'url': ...}} (a data: URL, http(s):// or file://)",
            param=param,
        )
    if detail is not None and detail not in DETAILS:
        raise bad_request(f"{param}.detail must be one of {', '.join(DETAILS)}", param=f"{param}.detail")
    return MediaRef("video" if kind in VIDEO_PART_TYPES else "image", url, param, detail)


def media_placeholder(ref: MediaRef) -> dict[str, Any]:
    """A template content part that keeps its reference, so a stored conversation can be prompted again."""
    return {"type": ref.kind, "url": ref.url, "param": ref.param, "detail": ref.detail}


def split_media(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[MediaRef]]:
    """Template messages in the HF multimodal convention (every content a list of parts; string content
    becomes one text part) with bare placeholders, and the references media_placeholder kept, in order."""
    refs: list[MediaRef] = []
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            content = [{"type": "text", "text": content or ""}]
        parts = []
        for part in content:
            if part.get("type") in ("image", "video") and "url" in part:
                refs.append(MediaRef(part["type"], part["url"], part["param"], part.get("detail")))
                part = {"type": part["type"]}
            parts.append(part)
        out.append({**message, "content": parts})
    return out, refs


def check_media_count(refs: list[MediaRef], limits: MediaLimits, param: str, video_ok: bool) -> None:
    """--limit-mm-per-prompt (vLLM's), and no video for a model that reads none."""
    for kind in ("image", "video"):
        count = sum(1 for ref in refs if ref.kind == kind)
        if kind == "video" and count and not video_ok:
            first = next(ref for ref in refs if ref.kind == "video")
            raise APIError(
                "The served model does not read video", param=first.param, code="unsupported_content_type"
            )
        limit = limits.limit_mm_per_prompt.get(kind, 0)
        if count > limit:
            raise APIError(
                f"At most {limit} {kind}(s) may be provided in one prompt; this request has {count} "
                "(--limit-mm-per-prompt)",
                param=param,
                code="too_many_media_items",
            )


async def load_one(ref: MediaRef, limits: MediaLimits) -> MediaInput:
    data = await fetch_media_bytes(ref.url, limits, ref.param)
    loop = asyncio.get_running_loop()
    if ref.kind == "video":
        return await loop.run_in_executor(None, decode_video, data, limits, ref.param)
    return await loop.run_in_executor(None, decode_image, data, limits, ref.param, ref.detail)


async def load_media(refs: list[MediaRef], limits: MediaLimits) -> list[MediaInput]:
    """Every reference fetched and decoded, concurrently; the first failure is the request's 400."""
    tasks = [asyncio.create_task(load_one(ref, limits)) for ref in refs]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
