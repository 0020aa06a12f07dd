"""Vision-language models in the batching engine (Idefics3/SmolVLM and LLaVA tiny random models): greedy output
is token for token what the HF model's own `generate` makes on the same processed inputs, alone, beside
text-only requests and other images in one batch, with two images in a message, and after a preemption;
a repeated image is encoded once; bad media are a typed 400 and the engine carries on."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import InvalidParameter
from engine.request import GenerationRequest
from engine.sampling import SamplingParams
from engine.vision.inputs import MediaInput, MultimodalInputs
from engine.vision.prompt import encode_vision_chat_async, encode_vision_prompt_async

NEW_TOKENS = 10
FAMILIES = ["idefics3", "llava"]  # Qwen2-VL / Qwen2.5-VL: tests/test_vlm_qwen2.py


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> MediaInput:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return MediaInput("image", [image], hashlib.sha256(pixels.tobytes()).hexdigest())


def user(text: str, images: int = 0) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


class VLM:
    """One family: the engine serving its tiny model, and the same model in transformers."""

    def __init__(self, engine: Engine, hf: torch.nn.Module, eos: list[int]) -> None:
        self.engine, self.hf, self.eos = engine, hf, eos

    async def prompt(
        self, messages: list[dict], media: list[MediaInput]
    ) -> tuple[list[int], MultimodalInputs]:
        return await encode_vision_chat_async(self.engine.processor, messages, media)

    async def generate(self, ids: list[int], mm: MultimodalInputs | None) -> list[int]:
        params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
        tokens: list[int] = []
        async for out in self.engine.generate(GenerationRequest(ids, params, multimodal=mm)):
            tokens += out.token_ids
        return tokens

    def reference(self, messages: list[dict], media: list[MediaInput]) -> tuple[list[int], list[int]]:
        """The prompt ids the processor makes by itself, and what `generate` continues them with."""
        processor = self.engine.processor
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        images = [item.frames[0] for item in media] or None
        inputs = processor(text=[text], images=images, return_tensors="pt")
        with torch.inference_mode():
            out = self.hf.generate(
                **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=self.eos
            )
        n = inputs["input_ids"].shape[1]
        return inputs["input_ids"][0].tolist(), out[0, n:].tolist()

    async def check(self, messages: list[dict], media: list[MediaInput]) -> list[int]:
        ids, mm = await self.prompt(messages, media)
        expected_ids, expected = self.reference(messages, media)
        assert ids == expected_ids
        assert await self.generate(ids, mm if media else None) == expected
        return expected


@pytest_asyncio.fixture(scope="module", params=FAMILIES)
async def vlm(request: pytest.FixtureRequest) -> AsyncIterator[VLM]:
    path = str(request.getfixturevalue(f"{request.param}_dir"))  # tests/vlm_models.py, built once a session
    # Every image of a step in one vision pass (the CPU default encodes one image a step)
    engine = Engine.load(EngineConfig(llm=path, asr=[], embed=[], tts=[], max_prefill_media=16))
    await engine.start()
    hf = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert engine._llm is not None
    yield VLM(engine, hf, list(engine._llm.scheduler.eos_token_ids))
    await engine.stop()


async def test_alone_and_two_images_in_one_message(vlm: VLM) -> None:
    assert vlm.engine.vision is not None and vlm.engine.processor is not None
    await vlm.check(user("What is in this picture?", 1), [picture(1)])
    await vlm.check(user("Compare these two.", 2), [picture(2), picture(3, (30, 60))])


async def test_in_a_batch_with_text_only_and_other_images(vlm: VLM) -> None:
    cases = [
        (user("Describe it.", 1), [picture(4)]),
        (user("Tell me a story about a fox."), []),
        (user("What colour is this?", 1), [picture(5, (64, 24))]),
        (user("Name three fruits."), []),
        (user("And these two?", 2), [picture(6), picture(4)]),
    ]
    before = vlm.engine.stats().llm_max_batch_size
    prompts = [await vlm.prompt(messages, media) for messages, media in cases]
    outputs = await asyncio.gather(*(vlm.generate(ids, mm if mm.items else None) for ids, mm in prompts))
    for (messages, media), output in zip(cases, outputs, strict=True):
        assert output == vlm.reference(messages, media)[1]
    assert max(before, vlm.engine.stats().llm_max_batch_size) >= len(cases)


async def test_repeated_image_is_encoded_once(vlm: VLM) -> None:
    image = picture(7)
    stats = vlm.engine.stats()
    encoded, hits = stats.vision_items_encoded, stats.vision_cache_hits
    await vlm.check(user("What is this?", 1), [image])
    await vlm.check(user("Look again: what is this?", 1), [image])  # a second turn about the same picture
    stats = vlm.engine.stats()
    assert (stats.vision_items_encoded - encoded, stats.vision_cache_hits - hits) == (1, 1)


async def test_bad_media_are_a_typed_400(vlm: VLM) -> None:
    ids, mm = await vlm.prompt(user("What is this?", 1), [picture(8)])
    with pytest.raises(InvalidParameter) as mismatch:  # the prompt's placeholders fill one image, not two
        await vlm.generate(ids, MultimodalInputs(mm.items * 2))
    assert mismatch.value.param == "prompt"
    clip = MediaInput("video", [picture(9).frames[0]] * 2, "clip", fps=1.0)
    with pytest.raises(InvalidParameter) as video:
        await vlm.prompt([{"role": "user", "content": [{"type": "video"}]}], [clip])
    assert video.value.code == "unsupported_content_type"
    with pytest.raises(InvalidParameter) as marks:  # a raw prompt marking no image for the one given
        await encode_vision_prompt_async(vlm.engine.processor, "no mark here", [picture(8)])
    assert marks.value.param == "prompt"
    await vlm.check(user("Still there?", 1), [picture(8)])


async def test_preempted_image_requests_recompute_exactly(llava_dir: Path) -> None:
    """A KV cache too small for every sequence at once (8 blocks of 16; a 58-token prompt takes 4 and needs
    a 5th as it decodes): the newest is preempted and recomputed later, its image spliced in again from the
    embedding cache (every picture here is different, so a cache hit is a recompute)."""
    path = str(llava_dir)
    config = EngineConfig(llm=path, asr=[], embed=[], tts=[], kv_cache_tokens=128, max_model_len=128)
    engine = Engine.load(config)
    await engine.start()
    try:
        assert engine._llm is not None
        vlm = VLM(engine, AutoModelForImageTextToText.from_pretrained(path).eval(), [])
        vlm.eos = list(engine._llm.scheduler.eos_token_ids)
        cases = [
            (user(f"Picture {i}: what is it? Tell me all you see.", 1), [picture(20 + i)]) for i in range(4)
        ]
        prompts = [await vlm.prompt(messages, media) for messages, media in cases]
        outputs = await asyncio.gather(*(vlm.generate(ids, mm) for ids, mm in prompts))
        for (messages, media), output in zip(cases, outputs, strict=True):
            assert output == vlm.reference(messages, media)[1]
        assert engine.stats().vision_cache_hits > 0  # the recomputes' images came from the cache
    finally:
        await engine.stop()
