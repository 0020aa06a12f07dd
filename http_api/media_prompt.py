"""Prompts with images and videos for a vision-language LLM: the media loaded (http_api/media.py), then
the model's processor renders the chat (or a raw /generate prompt) and prepares the media, off the event
loop (engine/vision/prompt.py)."""

from __future__ import annotations

from typing import Any

from engine.errors import InvalidParameter
from engine.interface import EngineClient
from engine.vision.inputs import MultimodalInputs
from engine.vision.prompt import encode_vision_chat_async, encode_vision_prompt_async
from http_api.errors import invalid_parameter
from http_api.generation import request_template
from http_api.limits import HTTPLimits
from http_api.media import MediaRef, check_media_count, load_media

Message = dict[str, Any]


def video_ok(engine: EngineClient) -> bool:
    return engine.vision is not None and engine.vision.video_token is not None


async def encode_media_chat(
    engine: EngineClient,
    limits: HTTPLimits,
    messages: list[Message],
    refs: list[MediaRef],
    chat_template: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
    param: str = "messages",
) -> tuple[list[int], MultimodalInputs | None]:
    """Prompt ids and the processed media for chat messages in the HF multimodal convention (content
    parts {"type": "text"|"image"|"video"}), `refs` in the order of their placeholders. `param`: the
    request field an error about the whole prompt names."""
    check_media_count(refs, limits.media, param, video_ok(engine))
    template, kwargs = request_template(chat_template, template_kwargs, limits.trust_request_chat_template)
    media = await load_media(refs, limits.media)
    try:
        ids, multimodal = await encode_vision_chat_async(
            engine.processor,
            messages,
            media,
            chat_template=template,
            template_kwargs=kwargs,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
        )
    except InvalidParameter as exc:
        raise invalid_parameter(exc, {"messages": param}) from exc
    return ids, multimodal if multimodal.items else None


async def encode_media_prompt(
    engine: EngineClient, limits: HTTPLimits, text: str, refs: list[MediaRef], param: str
) -> tuple[list[int], MultimodalInputs | None]:
    """A raw prompt (SGLang's /generate text) holding the model's image placeholder once per image."""
    check_media_count(refs, limits.media, param, video_ok(engine))
    media = await load_media(refs, limits.media)
    try:
        ids, multimodal = await encode_vision_prompt_async(engine.processor, text, media)
    except InvalidParameter as exc:
        raise invalid_parameter(exc, {"prompt": "text", "messages": "text"}) from exc
    return ids, multimodal if multimodal.items else None
