"""Tiny randomly initialised vision-language models of the real architectures, saved like hub checkpoints.

Each builder writes a directory that `AutoModelForImageTextToText.from_pretrained(dir)` and
`AutoProcessor.from_pretrained(dir)` load offline: the weights (fixed seed), the config, the PIL image
processor, SmolLM2's tokenizer with the family's special tokens, and the family's real chat template.
`smolvlm_256m` builds SmolVLM-256M-Instruct's exact architecture with random weights (the benchmark).

The session fixtures at the bottom (one directory per family) are imported by tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The real templates, as the hub checkpoints ship them (chat_template.json / processor_config.json).
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)  # HuggingFaceTB/SmolVLM-*-Instruct
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)  # Qwen/Qwen2-VL-*-Instruct and Qwen/Qwen2.5-VL-*-Instruct
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)  # llava-hf/llava-1.5-*-hf

SMOLLM2_VOCAB = 49152  # SmolLM2's own tokens; the VLM families' special tokens come after them
# SmolVLM's added tokens at their real ids: <global-img> 49152, the 36 tile tags, the image tokens at
# 49189/49190, reserved fillers, <end_of_utterance> 49279 (vocab 49280).
IDEFICS3_TILE_TAGS = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
IDEFICS3_TOKENS = [
    "<global-img>", *IDEFICS3_TILE_TAGS, "<fake_token_around_image>", "<image>",
    *[f"<|reserved_special_token_{i}|>" for i in range(88)], "<end_of_utterance>",
]  # fmt: skip
QWEN2_VL_TOKENS = [
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
LLAVA_TOKENS = ["<image>"]

TINY_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
}  # fmt: skip


def smollm2_tokenizer(extra_tokens: list[str]) -> Any:
    """SmolLM2-135M-Instruct's tokenizer (the rtserve cache, else its GGUF package) plus `extra_tokens`."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    from engine.config import default_cache_dir
    from engine.models.llm_loader import embedded_gguf_path

    cached = default_cache_dir() / "llm" / "smollm2-135m-instruct"
    if (cached / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        gguf = embedded_gguf_path("smollm2-135m-instruct")
        assert gguf is not None
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in extra_tokens], special_tokens=True
    )
    assert tokenizer.convert_tokens_to_ids(extra_tokens[0]) == SMOLLM2_VOCAB, "SmolLM2's vocabulary changed"
    return tokenizer


def _vocab_size(tokenizer: Any) -> int:
    return (len(tokenizer) + 63) // 64 * 64


def _save(model: Any, processor: Any, target: Path, eos_token_id: int, pad_token_id: int) -> Path:
    """The weights, config and generation config; then the processor (None: the caller saves its parts)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(target)
    if processor is not None:
        processor.save_pretrained(target)
    return target


def _seeded(build: Callable[[], Any]) -> Any:
    import torch

    torch.manual_seed(0)
    with torch.device("cpu"):
        return build().eval()


def _idefics3_processor(tokenizer: Any, tile: int, longest_edge: int, image_seq_len: int) -> Any:
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    images = Idefics3ImageProcessorPil(
        size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}, do_image_splitting=True
    )
    return Idefics3Processor(images, tokenizer, image_seq_len=image_seq_len, chat_template=SMOLVLM_TEMPLATE)


def _idefics3_tokenizer() -> Any:
    tokenizer = smollm2_tokenizer(IDEFICS3_TOKENS)
    tokenizer.eos_token = "<end_of_utterance>"  # SmolVLM-Instruct's tokenizer_config
    return tokenizer


def build_idefics3(target: Path) -> Path:
    """SmolVLM-style Idefics3 (Llama text model): 32 px tiles of 8x8 patches, 16 tokens a tile; an image
    up to 64 px on its longest edge splits into at most 2x2 tiles plus the global one (<= 80 tokens)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    tokenizer = _idefics3_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    eos_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    text = {**TINY_TEXT, "model_type": "llama", "vocab_size": 49280, "rope_theta": 100000.0,
            "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": eos_id}  # fmt: skip
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 4}  # fmt: skip
    config = Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=2,
        image_token_id=image_id,
        tie_word_embeddings=False,
    )
    model = _seeded(lambda: Idefics3ForConditionalGeneration(config))
    processor = _idefics3_processor(tokenizer, tile=32, longest_edge=64, image_seq_len=16)
    return _save(model, processor, target, eos_id, 2)


def smolvlm_256m_config(image_token_id: int, eos_token_id: int) -> Any:
    """HuggingFaceTB/SmolVLM-256M-Instruct's config.json (text model: SmolLM2-135M; SigLIP-B/16 at 512)."""
    from transformers import Idefics3Config

    text = {
        "model_type": "llama", "vocab_size": 49280, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
        "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "initializer_range": 0.041666666666666664, "pad_token_id": 2, "bos_token_id": 1,
        "eos_token_id": eos_token_id,
    }  # fmt: skip
    vision = {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "image_size": 512, "patch_size": 16, "num_channels": 3, "layer_norm_eps": 1e-6,
    }  # fmt: skip
    return Idefics3Config(
        text_config=text, vision_config=vision, scale_factor=4, image_token_id=image_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip


def smolvlm_256m(target: Path, *, do_image_splitting: bool = True) -> Path:
    """SmolVLM-256M-Instruct's exact architecture and processor with random weights (~1 GB in float32).

    The real processor tiles an image into up to 4x4 512 px tiles plus a global one (64 tokens each);
    `do_image_splitting=False` keeps one 512 px tile (64 tokens), as CPU users of SmolVLM often do."""
    from transformers import Idefics3ForConditionalGeneration

    tokenizer = _idefics3_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    eos_id = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    config = smolvlm_256m_config(image_id, eos_id)
    model = _seeded(lambda: Idefics3ForConditionalGeneration(config))
    processor = _idefics3_processor(tokenizer, tile=512, longest_edge=2048, image_seq_len=64)
    processor.image_processor.do_image_splitting = do_image_splitting
    return _save(model, processor, target, eos_id, 2)


def _qwen2_vl_parts(vocab_size: int, tokenizer: Any) -> dict[str, Any]:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    ]}  # fmt: skip
    text = {**TINY_TEXT, "vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}}  # fmt: skip
    return {"text_config": text, "tie_word_embeddings": False, **ids}


def _save_qwen2_vl(model: Any, tokenizer: Any, target: Path, processor_class: str) -> Path:
    """Saved as the hub checkpoints are: weights, tokenizer, preprocessor_config.json, chat_template.jinja."""
    from transformers import Qwen2VLImageProcessorPil

    # min 4x4, max 8x8 merged tokens: 14 px patches merged 2x2 -> 28 px a token
    images = Qwen2VLImageProcessorPil(min_pixels=112 * 112, max_pixels=224 * 224)
    images.processor_class = processor_class  # as the hub's preprocessor_config.json names it
    target = _save(model, None, target, eos_token_id=2, pad_token_id=0)
    images.save_pretrained(target)
    tokenizer.chat_template = QWEN2_VL_TEMPLATE  # saved as chat_template.jinja
    tokenizer.save_pretrained(target)
    return target


def build_qwen2_vl(target: Path) -> Path:
    """Qwen2-VL: 14 px patches merged 2x2; an image costs 16 to 64 tokens (112x112 .. 224x224 pixels)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = smollm2_tokenizer(QWEN2_VL_TOKENS)
    vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 64, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    config = Qwen2VLConfig(vision_config=vision, **_qwen2_vl_parts(_vocab_size(tokenizer), tokenizer))
    model = _seeded(lambda: Qwen2VLForConditionalGeneration(config))
    return _save_qwen2_vl(model, tokenizer, target, "Qwen2VLProcessor")


def build_qwen2_5_vl(target: Path) -> Path:
    """Qwen2.5-VL: as Qwen2-VL, with window attention in the vision tower (block 1 full attention)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = smollm2_tokenizer(QWEN2_VL_TOKENS)
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
              "fullatt_block_indexes": [1], "tokens_per_second": 2}  # fmt: skip
    config = Qwen2_5_VLConfig(vision_config=vision, **_qwen2_vl_parts(_vocab_size(tokenizer), tokenizer))
    model = _seeded(lambda: Qwen2_5_VLForConditionalGeneration(config))
    return _save_qwen2_vl(model, tokenizer, target, "Qwen2_5_VLProcessor")


def build_llava(target: Path) -> Path:
    """LLaVA-1.5 style: a CLIP vision tower (48 px, 8 px patches, CLS dropped: 36 tokens an image), a
    two-layer GELU projector and a Llama text model."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = smollm2_tokenizer(LLAVA_TOKENS)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    text = {**TINY_TEXT, "model_type": "llama", "vocab_size": _vocab_size(tokenizer), "rope_theta": 10000.0,
            "pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 48, "patch_size": 8,
              "projection_dim": 32}  # fmt: skip
    config = LlavaConfig(
        text_config=text, vision_config=vision, image_token_index=image_id, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-2, tie_word_embeddings=False,
    )  # fmt: skip
    model = _seeded(lambda: LlavaForConditionalGeneration(config))
    images = CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    processor = LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    )  # fmt: skip
    return _save(model, processor, target, 2, 2)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "idefics3": build_idefics3,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "llava": build_llava,
}


# ---- helpers for tests that compare against transformers' own generate ----


def noise_image(seed: int, width: int = 48, height: int = 48) -> Any:
    """A deterministic RGB noise picture (random weights see no difference between noise and a photo)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def load_processor(model_dir: Path | str) -> Any:
    """The processor as the server loads it (AutoProcessor; Qwen2-VL's less its torchvision video part)."""
    from engine.models.llm_loader import load_vision_processor

    return load_vision_processor(model_dir)


def load(model_dir: Path | str) -> tuple[Any, Any]:
    """(model, processor) as a user of transformers would load them."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    return model, load_processor(model_dir)


def image_chat(question: str, images: int = 1) -> list[dict[str, Any]]:
    """One user message: `images` image placeholders, then the question (the HF multimodal convention)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(images)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def hf_inputs(processor: Any, messages: list[dict[str, Any]], images: list[Any]) -> Any:
    """The processor's tensors for a chat: the template, then text + images together."""
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[prompt], images=images or None, return_tensors="pt")


def hf_greedy(
    model: Any, processor: Any, messages: list[dict[str, Any]], images: list[Any], max_new_tokens: int
) -> list[int]:
    """transformers' own greedy generate on the processed chat: the new token ids."""
    import torch

    inputs = hf_inputs(processor, messages, images)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


# ---- session fixtures: one directory per family, built once (tests/conftest.py imports them) ----


def _family_dir(factory: pytest.TempPathFactory, family: str) -> Path:
    return BUILDERS[family](factory.mktemp(f"vlm_{family}"))


@pytest.fixture(scope="session")
def idefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _family_dir(tmp_path_factory, "idefics3")


@pytest.fixture(scope="session")
def qwen2_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _family_dir(tmp_path_factory, "qwen2_vl")


@pytest.fixture(scope="session")
def qwen2_5_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _family_dir(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _family_dir(tmp_path_factory, "llava")
