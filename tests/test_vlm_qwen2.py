"""Qwen2-VL and Qwen2.5-VL: M-RoPE, video features and the vision family against transformers' own code; then
the engine serving V3's tiny checkpoints: greedy output token for token what the HF model's `generate` makes
on the same processed inputs (an image alone; beside a text-only request and another image in one batch; two
images in one message; a video with an image, HF fed our video features)."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from engine.config import EngineConfig
from engine.core import Engine
from engine.models.mrope import GridItem, MRotaryEmbedding, mrope_positions
from engine.models.vision.qwen2_vl import Qwen2VLFamily
from engine.request import GenerationRequest
from engine.sampling import SamplingParams
from engine.vision.inputs import MediaInput, ProcessedMedia
from engine.vision.prompt import encode_vision_chat_async
from engine.vision.video_features import VideoGeometry, encode_qwen2_vl_prompt, video_features_from_frames

IMAGE_ID, VIDEO_ID, START_ID, END_ID = 290, 291, 292, 293
TEXT_CONFIG = {
    "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "bos_token_id": 0, "eos_token_id": 299,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
}  # fmt: skip
TOKEN_IDS = {"image_token_id": IMAGE_ID, "video_token_id": VIDEO_ID,
             "vision_start_token_id": START_ID, "vision_end_token_id": END_ID}  # fmt: skip
FAMILIES = ["qwen2_vl", "qwen2_5_vl"]


def tiny_model(family: str) -> torch.nn.Module:
    """A randomly initialised model small enough to build in a blink (the served models: vlm_models.py)."""
    torch.manual_seed(0)
    if family == "qwen2_vl":
        vision = {"depth": 1, "embed_dim": 32, "num_heads": 2, "hidden_size": 64, "mlp_ratio": 2}
        return Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=TEXT_CONFIG, vision_config=vision, **TOKEN_IDS)
        ).eval()
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "fullatt_block_indexes": [1], "window_size": 56, "tokens_per_second": 25}  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(text_config=TEXT_CONFIG, vision_config=vision, **TOKEN_IDS)
    ).eval()


@pytest.fixture(scope="module")
def image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56 * 2)


class _ImageOnlyProcessor:
    """What a processor looks like here without torchvision: an image processor and no video processor."""

    def __init__(self, image_processor: Qwen2VLImageProcessorPil) -> None:
        self.image_processor = image_processor


def noise(seed: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def image_item(image_processor: Qwen2VLImageProcessorPil, image: Image.Image) -> ProcessedMedia:
    features = dict(image_processor(images=[image], return_tensors="pt"))
    return ProcessedMedia("image", "h", features, int(features["image_grid_thw"].prod()) // 4)


def video_item(
    image_processor: Qwen2VLImageProcessorPil, frames: list[Image.Image], fps: float
) -> ProcessedMedia:
    features, num_tokens = video_features_from_frames(
        frames, VideoGeometry.of(_ImageOnlyProcessor(image_processor)), fps
    )
    return ProcessedMedia("video", "v", features, num_tokens)


def prompt_with(items: list[ProcessedMedia]) -> list[int]:
    """Text, then each item between vision start/end tokens with text after it."""
    ids = [1, 2, 3]
    for n, item in enumerate(items):
        ids += [START_ID] + [IMAGE_ID if item.kind == "image" else VIDEO_ID] * item.num_tokens + [END_ID]
        ids += list(range(10 + n, 12 + 2 * n))
    return ids


def hf_inputs(
    family: str,
    ids: list[int],
    items: list[ProcessedMedia],
    image_id: int = IMAGE_ID,
    video_id: int = VIDEO_ID,
) -> dict[str, torch.Tensor]:
    """What the HF processor would hand `generate` for this prompt and these items."""
    images = [item for item in items if item.kind == "image"]
    videos = [item for item in items if item.kind == "video"]
    inputs = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[1 if t == image_id else 2 if t == video_id else 0 for t in ids]]),
    }
    if images:
        inputs["pixel_values"] = torch.cat([item.features["pixel_values"] for item in images])
        inputs["image_grid_thw"] = torch.cat([item.features["image_grid_thw"] for item in images])
    if videos:
        inputs["pixel_values_videos"] = torch.cat([item.features["pixel_values_videos"] for item in videos])
        inputs["video_grid_thw"] = torch.cat([item.features["video_grid_thw"] for item in videos])
        if family == "qwen2_5_vl":
            inputs["second_per_grid_ts"] = torch.cat([item.features["second_per_grid_ts"] for item in videos])
    return inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_mrope_positions_and_rotary_match_transformers(family: str, image_processor) -> None:
    """Two images of different shapes and a 5-frame video (padded to 6): our positions, decode delta and
    cos/sin are transformers' get_rope_index and rotary module's, exactly."""
    model = tiny_model(family)
    items = [
        image_item(image_processor, noise(0, 50, 90)),
        video_item(image_processor, [noise(i, 40, 40) for i in range(5)], fps=3.0),
        image_item(image_processor, noise(1, 30, 30)),
    ]
    ids = prompt_with(items)
    inputs = hf_inputs(family, ids, items)
    extra = {"second_per_grid_ts": inputs["second_per_grid_ts"]} if family == "qwen2_5_vl" else {}
    hf_positions, hf_delta = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"], inputs["video_grid_thw"],
        **extra,
    )  # fmt: skip
    positions, delta = Qwen2VLFamily(model).prompt_positions(ids, items)
    assert positions.tolist() == hf_positions[:, 0].tolist()
    assert delta == int(hf_delta)
    if family == "qwen2_5_vl":  # the video's frames are tokens_per_second * 2 / fps = 16.67 apart in time
        assert len(set(positions[0].tolist())) > len(set(positions[1].tolist()))

    rotary = MRotaryEmbedding(model.config.text_config, torch.device("cpu"), torch.float32)
    hidden = torch.zeros(1, len(ids), 64)
    hf_cos, hf_sin = model.model.language_model.rotary_emb(hidden, hf_positions)
    cos, sin = rotary.cos_sin(positions)
    assert torch.equal(cos[:, 0], hf_cos[0]) and torch.equal(sin[:, 0], hf_sin[0])
    text_positions = torch.arange(7)  # a text-only row: [n] positions, the same on every axis
    hf_cos, _ = model.model.language_model.rotary_emb(hidden[:, :7], text_positions.expand(3, 1, -1))
    assert torch.equal(rotary.cos_sin(text_positions)[0][:, 0], hf_cos[0])


def test_mrope_positions_reject_mismatched_media() -> None:
    with pytest.raises(ValueError, match="more media placeholder"):
        mrope_positions([1, IMAGE_ID, IMAGE_ID, 2], frozenset({IMAGE_ID}), [], 2)
    with pytest.raises(ValueError, match="fewer media placeholder"):
        mrope_positions([1, 2], frozenset({IMAGE_ID}), [GridItem((1, 2, 2))], 2)


def test_video_features_match_the_image_processor_per_frame(image_processor) -> None:
    """Frames A A B B A: each temporal patch of two equal frames is exactly what the HF image processor
    makes of that frame alone (it repeats an image over the temporal patch); the odd last frame is padded
    by repeating it. Same resize (smart_resize + PIL bicubic), normalisation and patch order."""
    a, b = noise(0, 50, 90), noise(1, 50, 90)
    features, num_tokens = video_features_from_frames(
        [a, a, b, b, a], VideoGeometry.of(_ImageOnlyProcessor(image_processor)), fps=2.0
    )
    reference = image_processor(images=[a, b, a], return_tensors="pt")
    assert features["video_grid_thw"].tolist() == [[3, 4, 6]]
    assert num_tokens == 3 * 4 * 6 // 4
    assert features["pixel_values_videos"].shape == reference["pixel_values"].shape
    torch.testing.assert_close(features["pixel_values_videos"], reference["pixel_values"], atol=1e-6, rtol=0)
    assert features["second_per_grid_ts"].tolist() == [1.0]  # temporal_patch_size / fps


def test_video_patch_order_is_the_video_processors(image_processor) -> None:
    """Distinct frames: each row is (t, h-block, w-block, h-in-block, w-in-block) and each column
    (channel, frame-in-patch, y, x), Qwen2VLVideoProcessor.patchify's layout, re-derived in numpy."""
    frames = [noise(i, 56, 84) for i in range(4)]
    geometry = VideoGeometry.of(_ImageOnlyProcessor(image_processor))
    features, _ = video_features_from_frames(frames, geometry, fps=1.0)
    mean = np.array(geometry.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(geometry.image_std, dtype=np.float32)[:, None, None]
    video = np.stack([(np.asarray(f, np.float32).transpose(2, 0, 1) / 255 - mean) / std for f in frames])
    rows = []
    for t in range(2):
        for by in range(2):
            for bx in range(3):
                for my in range(2):
                    for mx in range(2):
                        y, x = (by * 2 + my) * 14, (bx * 2 + mx) * 14
                        rows.append(video[2 * t : 2 * t + 2, :, y : y + 14, x : x + 14].transpose(1, 0, 2, 3))
    expected = torch.from_numpy(np.stack(rows).reshape(len(rows), -1))
    assert features["video_grid_thw"].tolist() == [[2, 4, 6]]  # 56x84 needs no resize
    torch.testing.assert_close(features["pixel_values_videos"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_batches_images_and_videos_like_transformers(family: str, image_processor) -> None:
    """One vision pass over two images and a video gives each item what HF's get_*_features give it."""
    model = tiny_model(family)
    items = [
        image_item(image_processor, noise(0, 50, 90)),
        video_item(image_processor, [noise(i, 40, 40) for i in range(4)], fps=2.0),
        image_item(image_processor, noise(1, 30, 30)),
    ]
    embeddings = Qwen2VLFamily(model).encode(items)
    assert [e.shape[0] for e in embeddings] == [item.num_tokens for item in items]
    with torch.inference_mode():
        for item, ours in zip(items, embeddings, strict=True):
            if item.kind == "image":
                out = model.model.get_image_features(
                    item.features["pixel_values"], item.features["image_grid_thw"]
                )
            else:
                out = model.model.get_video_features(
                    item.features["pixel_values_videos"], item.features["video_grid_thw"]
                )
            torch.testing.assert_close(ours, out.pooler_output[0], atol=1e-5, rtol=1e-5)


# ---- the engine serving the tiny checkpoints (tests/vlm_models.py), against transformers' generate ----

NEW_TOKENS = 12
LOGPROB_TOLERANCE = 1e-4


def media(kind: str, frames: list[Image.Image], fps: float | None = None) -> MediaInput:
    digest = hashlib.sha256(b"".join(frame.tobytes() for frame in frames)).hexdigest()
    return MediaInput(kind, frames, digest, fps=fps)


def picture(seed: int, width: int = 48, height: int = 48) -> MediaInput:
    return media("image", [noise(seed, height, width)])


def user(text: str, *kinds: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": kind} for kind in kinds] + [{"type": "text", "text": text}]}
    ]


class Served:
    """One family: the engine serving its tiny checkpoint, and the same checkpoint in transformers."""

    def __init__(self, family: str, engine: Engine, hf: torch.nn.Module) -> None:
        self.family, self.engine, self.hf = family, engine, hf
        processor = engine.processor
        self.image_id, self.video_id = processor.image_token_id, processor.video_token_id

    async def ours(
        self, messages: list[dict], items: list[MediaInput]
    ) -> tuple[list[int], list[int], list[float]]:
        """The prompt ids, the engine's greedy tokens and their logprobs."""
        ids, multimodal = await encode_vision_chat_async(self.engine.processor, messages, items)
        params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0, logprobs=0)
        request = GenerationRequest(ids, params, multimodal=multimodal if items else None)
        tokens: list[int] = []
        logprobs: list[float] = []
        async for out in self.engine.generate(request):
            tokens += out.token_ids
            logprobs += [lp.logprob for lp in out.logprobs or []]
        return ids, tokens, logprobs

    def processor_ids(self, messages: list[dict], items: list[MediaInput]) -> list[int]:
        """The HF processor's own prompt for an image chat (it takes no video without torchvision)."""
        processor = self.engine.processor
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = [item.frames[0] for item in items] or None
        return processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()

    async def reference(self, messages: list[dict], items: list[MediaInput]) -> tuple[list[int], list[float]]:
        """`generate` on the prompt ids and each item's processed features: its tokens and their logprobs."""
        ids, multimodal = await encode_vision_chat_async(self.engine.processor, messages, items)
        inputs = hf_inputs(self.family, ids, multimodal.items, self.image_id, self.video_id)
        with torch.inference_mode():
            out = self.hf.generate(
                **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                return_dict_in_generate=True,
            )  # fmt: skip
        tokens = out.sequences[0, len(ids) :].tolist()
        logprobs = [
            float(torch.log_softmax(step[0].float(), -1)[token])
            for step, token in zip(out.logits, tokens, strict=True)
        ]
        return tokens, logprobs

    async def check(self, messages: list[dict], items: list[MediaInput]) -> list[int]:
        """Same tokens as `generate`, with the same logprobs (to float noise: a wrong position or embedding
        moves them far more, even where the argmax survives it)."""
        expected, expected_logprobs = await self.reference(messages, items)
        ids, tokens, logprobs = await self.ours(messages, items)
        if not any(item.kind == "video" for item in items):
            assert ids == self.processor_ids(messages, items)
        assert tokens == expected
        assert logprobs == pytest.approx(expected_logprobs, abs=LOGPROB_TOLERANCE)
        return tokens


QK_SHARPEN = 30.0


def sharpened(source: Path, target: Path) -> Path:
    """The checkpoint with its text attention's q/k weights scaled up: at the tiny models' init scale the
    attention is all but uniform, so positions would hardly matter; this way a wrong M-RoPE position moves
    the logprobs well past float noise."""
    model = AutoModelForImageTextToText.from_pretrained(source)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                projection.weight.mul_(QK_SHARPEN)
                projection.bias.mul_(QK_SHARPEN)
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors"):
            shutil.copy(path, target / path.name)
    model.save_pretrained(target)
    return target


@pytest_asyncio.fixture(scope="module", params=FAMILIES)
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    tiny: Path = request.getfixturevalue(f"{request.param}_dir")
    directory = sharpened(tiny, tmp_path_factory.mktemp(f"{request.param}_sharp"))
    engine = Engine.load(
        EngineConfig(llm=str(directory), asr=[], embed=[], tts=[], max_num_seqs=8, max_prefill_media=16)
    )
    await engine.start()
    yield Served(request.param, engine, AutoModelForImageTextToText.from_pretrained(directory).eval())
    await engine.stop()


async def test_image_alone(served: Served) -> None:
    tokens = await served.check(user("What is in this image?", "image"), [picture(0)])
    assert len(set(tokens)) > 1  # a real continuation, not one token repeated


async def test_image_in_a_batch_with_text_and_another_image(served: Served) -> None:
    """Three requests prefilled together: each is what `generate` makes of it alone."""
    requests = [
        (user("Describe the picture.", "image"), [picture(1)]),
        ([{"role": "user", "content": "Name three colours."}], []),
        (user("And this one?", "image"), [picture(2, width=96, height=64)]),
    ]
    expected = [await served.reference(messages, items) for messages, items in requests]
    encoded = served.engine.stats().vision_items_encoded
    got = await asyncio.gather(*(served.ours(messages, items) for messages, items in requests))
    for (_, tokens, logprobs), (expected_tokens, expected_logprobs) in zip(got, expected, strict=True):
        assert tokens == expected_tokens
        assert logprobs == pytest.approx(expected_logprobs, abs=LOGPROB_TOLERANCE)
    assert served.engine.stats().vision_items_encoded == encoded + 2
    assert expected[0][0] != expected[2][0]


async def test_two_images_in_one_message(served: Served) -> None:
    await served.check(user("Compare the two pictures.", "image", "image"), [picture(3), picture(4, 64, 32)])


async def test_video_and_image(served: Served) -> None:
    """A 5-frame video (padded to 6: 3 temporal patches) and an image in one message; HF generate is fed
    our video features (its video processor needs torchvision)."""
    video = media("video", [noise(10 + i, 56, 84) for i in range(5)], fps=2.0)
    messages = user("What happens in the video?", "video", "image")
    tokens = await served.check(messages, [video, picture(5)])
    ids, multimodal = await encode_vision_chat_async(served.engine.processor, messages, [video, picture(5)])
    assert multimodal.items[0].features["video_grid_thw"].tolist() == [
        [3, 8, 10]
    ]  # 56x84 scaled up to min_pixels: 112x140
    assert ids.count(served.video_id) == 3 * 4 * 5
    assert len(set(tokens)) > 1


async def test_prompt_with_videos_is_made_as_the_processor_makes_one(served: Served) -> None:
    """The prompt builder for videos (the processor refuses them here) on images alone: the processor's
    own ids and pixels."""
    processor = served.engine.processor
    text = processor.apply_chat_template(
        user("Two?", "image", "image"), add_generation_prompt=True, tokenize=False
    )
    items = [picture(6), picture(7, 64, 32)]
    ids, processed = encode_qwen2_vl_prompt(processor, text, items)
    batch = processor(text=[text], images=[item.frames[0] for item in items], return_tensors="pt")
    assert ids == batch["input_ids"][0].tolist()
    assert torch.equal(
        torch.cat([item.features["pixel_values"] for item in processed]), batch["pixel_values"]
    )
