"""The tiny VLM builders (tests/vlm_models.py): each family's saved directory loads offline with the Auto
classes, its processor expands an image into the family's placeholder tokens, and generate runs on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vlm_models import hf_greedy, hf_inputs, image_chat, load, noise_image

QWEN_PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
# (fixture, the family's chat template's opening, the placeholder token, how many the processor writes
# for one 48x48 picture)
FAMILIES = [
    ("idefics3_dir", "<|im_start|>User:<image>", "<image>", 5 * 16),  # 2x2 tiles of 32 px + the global one
    ("qwen2_vl_dir", QWEN_PROMPT, "<|image_pad|>", 16),  # upscaled to 112x112: 8x8 patches merged 2x2
    ("qwen2_5_vl_dir", QWEN_PROMPT, "<|image_pad|>", 16),
    ("llava_dir", "USER: <image>\n", "<image>", 36),  # 48 px / 8 px patches, CLS dropped
]


@pytest.mark.parametrize(("fixture", "opening", "placeholder", "count"), FAMILIES)
def test_builder_round_trips(
    fixture: str, opening: str, placeholder: str, count: int, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    model, processor = load(model_dir)
    tokenizer = processor.tokenizer
    placeholder_id = tokenizer.convert_tokens_to_ids(placeholder)
    assert placeholder_id >= 49152, "the family's tokens come after SmolLM2's own"
    assert model.config.text_config.vocab_size >= len(tokenizer)

    messages = image_chat("What is in this image?")
    assert processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False).startswith(
        opening
    )
    inputs = hf_inputs(processor, messages, [noise_image(1)])
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(placeholder_id) == count
    assert "What is in this image?" in tokenizer.decode(ids)

    first = hf_greedy(model, processor, messages, [noise_image(1)], max_new_tokens=6)
    assert len(first) == 6 and first == hf_greedy(model, processor, messages, [noise_image(1)], 6)
    other = hf_greedy(model, processor, messages, [noise_image(2)], max_new_tokens=6)
    assert other != first, "the picture reaches the language model"
