"""The LLM lane: continuous batching of generation requests (scheduler.py) run by runner.py."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.kernels.build import load_cpu_kernels
from engine.kernels.ops import CpuDecodeKernels
from engine.llm.blocks import BlockManager
from engine.llm.chat import configure_chat_template
from engine.llm.detokenizer import IncrementalDetokenizer
from engine.llm.grammar.compiler import GrammarCompiler
from engine.llm.grammar.masks import GrammarMasks
from engine.llm.kv_cache import KVCache
from engine.llm.lora_lane import LoRAAdapters, attach_lora, setup_lora
from engine.llm.media_embedder import MediaEmbedder
from engine.llm.runner import LLMRunner
from engine.llm.scheduler import LLMBatch, LLMScheduler
from engine.llm.sequence import Sequence, StepTokens
from engine.models.generation_config import resolve_generation_defaults
from engine.models.kernel_decoder import KernelDecoder, kernel_decoding_supported
from engine.models.llm_loader import LLMBundle, load_llm
from engine.models.paged_llama import PagedLlama, TextDecoder
from engine.models.quantize import (
    WEIGHT_ONLY_FORMATS,
    quantize_llm_int8,
    quantize_llm_weight_only,
    torch_weight_format,
)
from engine.models.vision import build_vision_family
from engine.models.vision.family import VisionFamily
from engine.request import GenerationRequest
from engine.stats import EngineStats
from engine.vision.embedding_cache import EmbeddingCache
from engine.vision.inputs import MultimodalInputs, VisionInfo

log = logging.getLogger(__name__)


class LLMLane:
    name = "llm"
    loras: LoRAAdapters | None = None  # LoRA adapters served beside the base model
    vision: VisionInfo | None = None  # a vision-language LLM (engine/models/vision/); None: text only
    processor: Any = None  # its Hugging Face processor
    # Set by the engine when other work arrives or waits: a multi-step decode stops after its current step
    interrupt: threading.Event | None = None

    def __init__(
        self,
        model_name: str,
        tokenizer: Any,
        scheduler: LLMScheduler,
        runner: LLMRunner,
        stats: EngineStats,
        generation_defaults: dict[str, float | int] | None = None,
    ) -> None:
        self.model_name = model_name
        # Sampling values for requests that leave them unset (engine/models/generation_config.py)
        self.generation_defaults = dict(generation_defaults or {})
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.runner = runner
        self.stats = stats
        self.max_model_len = scheduler.max_model_len
        self.vocab_size = runner.model.vocab_size

    # ---- requests (event loop) ----

    def add(self, request: GenerationRequest, outputs: asyncio.Queue) -> Sequence:
        params = request.params
        params.validate(self.vocab_size)
        ids = request.prompt_token_ids
        if not ids:
            raise InvalidParameter("prompt", "the prompt is empty")
        self._check_media(ids, request.multimodal)  # first: media to a text-only model is the error to report
        if any(not 0 <= t < self.vocab_size for t in ids):
            raise InvalidParameter("prompt", "the prompt has token ids outside the vocabulary")
        if len(ids) + params.max_tokens > self.max_model_len:
            raise InvalidParameter(
                "max_tokens",
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has "
                f"{len(ids)} and max_tokens asks for {params.max_tokens} more",
                code="context_length_exceeded",
            )
        if params.structured is not None and self.runner.grammar is not None:
            # Compiled here, before the request joins the batch (a few ms cold; cached by kind and spec):
            # a constraint that cannot compile is this request's 400 and costs the others nothing.
            self.runner.grammar.compiler.compile(params.structured)
        seq = Sequence(list(ids), params, request.priority, outputs)
        seq.multimodal = request.multimodal if request.multimodal and request.multimodal.items else None
        seq.detokenizer = IncrementalDetokenizer(
            self.tokenizer, list(params.stop), params.skip_special_tokens, params.include_stop_str_in_output
        )
        attach_lora(self.loras, seq, request.lora_name)  # model_not_found for an adapter not served
        self.scheduler.add(seq)
        return seq

    def _check_media(self, ids: list[int], multimodal: MultimodalInputs | None) -> None:
        items = multimodal.items if multimodal is not None else []
        media = self.runner.media
        if media is None or self.vision is None:
            if items:
                raise InvalidParameter(
                    "messages", f"The model {self.model_name} is a text-only model: it reads no images or video",
                    code="unsupported_content_type",
                )  # fmt: skip
            return
        if self.vision.video_token is None and any(item.kind == "video" for item in items):
            raise InvalidParameter(
                "messages",
                f"The model {self.model_name} reads images, not video",
                code="unsupported_content_type",
            )
        placeholders = sum(1 for token in ids if token in media.placeholder_ids)
        expected = sum(item.num_tokens for item in items)
        if placeholders != expected:
            raise InvalidParameter(
                "prompt",
                f"the prompt has {placeholders} image/video placeholder tokens, but its {len(items)} media "
                f"item(s) fill {expected}",
            )

    def abort(self, seq: Sequence) -> None:
        if seq.finish_reason is None:
            seq.aborted = True

    def pending(self) -> int:
        return self.scheduler.pending()

    def fail_all(self, error: BaseException) -> None:
        self.scheduler.fail_all(error)

    def idle_release(self) -> Callable[[], int] | None:
        """The KV pages a burst touched go back to the OS once every block is free again."""
        runs = self.scheduler.blocks.take_releasable()
        return partial(self.runner.cache.release_blocks, runs) if runs else None

    # ---- the step ----

    def schedule(self) -> LLMBatch | None:
        batch = self.scheduler.schedule()
        if batch is not None:
            batch.interrupt = self.interrupt
        if batch is not None and self.loras is not None:
            batch.lora = self.loras.manager.step(batch.seqs)
        return batch

    def run(self, batch: LLMBatch) -> list[list[StepTokens]]:
        return self.runner.run(batch)

    def postprocess(self, batch: LLMBatch, sampled: list[list[StepTokens]]) -> None:
        made = self.scheduler.postprocess(batch, sampled)
        if not batch.is_prefill:
            self.stats.count_generated(made)
        elif self.runner.media is not None:
            self.stats.vision_items_encoded = self.runner.media.items_encoded
            self.stats.vision_cache_hits = self.runner.media.cache_hits

    def fail(self, batch: LLMBatch, error: BaseException) -> None:
        self.scheduler.fail(batch, error)


def _quantized(model: Any, fmt: str, device: str) -> Any:
    if fmt == "none":
        return model
    if device != "cpu":
        raise ValueError(f"--quantize {fmt} is a CPU option")
    log.info("LLM weights: %s", fmt)
    return quantize_llm_weight_only(model, fmt) if fmt in WEIGHT_ONLY_FORMATS else quantize_llm_int8(model)


def kernel_decoder_for(
    config: EngineConfig, device: str, model: Any, paged: PagedLlama
) -> KernelDecoder | None:
    """--quantize q4, or auto where 4-bit groups change no weight (a GGUF Q4_1 model): decode steps through
    the native CPU kernels (engine/models/kernel_decoder.py); None: torch ops."""
    if config.quantize not in ("q4", "auto"):
        return None
    if device != "cpu":
        if config.quantize == "q4":
            raise ValueError("--quantize q4 is a CPU option")
        return None
    why = kernel_decoding_supported(model)
    library = load_cpu_kernels(config.cache_dir) if why is None else None
    if why is None and library is None:
        why = "the CPU kernels could not be built (is a C++ compiler installed?)"
    if why is not None:
        if config.quantize == "q4":
            raise ValueError(f"--quantize q4: {why}")
        log.info("LLM decode: torch ops (%s)", why)
        return None
    kernels = CpuDecodeKernels(library, torch.get_num_threads())
    decoder = KernelDecoder(model, paged.rotary.cos, paged.rotary.sin, kernels)
    if config.quantize == "auto" and not decoder.exact:
        log.info(
            "LLM decode: torch ops (4-bit groups would change this model's weights; --quantize q4 uses them)"
        )
        return None
    log.info(
        "LLM decode: CPU kernels, 4-bit weights (%s)", "the model's own" if decoder.exact else "quantized"
    )
    return decoder


def _paged_model(
    bundle: LLMBundle, config: EngineConfig, device: str
) -> tuple[PagedLlama, VisionFamily | None]:
    """The paged forward over the LLM (a VLM's text decoder, run by its family), with --quantize applied
    to the decoder's weights (a VLM's vision tower stays as loaded)."""
    fmt = torch_weight_format(config.quantize)
    if bundle.processor is None:
        model = _quantized(bundle.model, fmt, device)
        paged = PagedLlama(model, min(config.max_model_len, model.config.max_position_embeddings))
        paged.kernel_decoder = kernel_decoder_for(config, device, model, paged)
        return paged, None
    if config.quantize == "q4":
        raise ValueError("--quantize q4 is for text-only models; a vision-language model's decoder runs fp32")
    family = build_vision_family(bundle.model)
    if config.lora_modules:
        raise ValueError("LoRA adapters are not supported for vision-language models")
    _quantized(family.text_model, fmt, device)
    max_model_len = min(config.max_model_len, family.text_config.max_position_embeddings)
    decoder = TextDecoder(family.text_model, family.lm_head, family.text_config)
    return PagedLlama(decoder, max_model_len, family.rotary(max_model_len)), family


def build_llm_lane(config: EngineConfig, device: str, stats: EngineStats) -> LLMLane | None:
    """Load config.llm (blocking) and size its paged KV cache; None when no LLM is configured."""
    if not config.llm:
        return None
    bundle = load_llm(config.llm, config.cache_dir, device)
    configure_chat_template(bundle.tokenizer, config.chat_template)
    paged, family = _paged_model(bundle, config, device)
    max_model_len = min(config.max_model_len, paged.model.config.max_position_embeddings)
    block_size = config.kv_block_size
    num_blocks = max(config.kv_cache_tokens // block_size, -(-max_model_len // block_size))
    dtype = next(paged.model.model.embed_tokens.parameters()).dtype
    cache = KVCache.allocate(
        paged.num_layers, num_blocks, block_size, paged.num_kv_heads, paged.head_dim, dtype, device
    )
    scheduler = LLMScheduler(
        BlockManager(num_blocks, block_size), config.max_num_seqs, config.max_prefill_tokens, max_model_len,
        bundle.eos_token_ids, stats, config.num_scheduler_steps,
        config.max_prefill_media or (1 if device == "cpu" else 16),
    )  # fmt: skip
    stats.kv_blocks_total = num_blocks
    defaults = resolve_generation_defaults(
        config.generation_config, config.override_generation_config, config.llm,
        getattr(bundle.model, "generation_config", None), paged.vocab_size,
    )  # fmt: skip
    log.info("generation defaults for %s: %s; a request's own values win", bundle.name, defaults.describe())
    grammar = GrammarMasks(GrammarCompiler(bundle.tokenizer, paged.vocab_size, bundle.eos_token_ids))
    runner = LLMRunner(paged, cache, device, grammar)
    lane = LLMLane(bundle.name, bundle.tokenizer, scheduler, runner, stats, defaults.values)
    if family is not None:  # a vision-language model: its media are encoded at prefill; no LoRA
        runner.media = MediaEmbedder(family, EmbeddingCache(config.mm_embedding_cache_mib * 2**20), device)
        lane.vision, lane.processor = family.info, bundle.processor
        if config.chat_template is not None:
            bundle.processor.chat_template = bundle.tokenizer.chat_template  # --chat-template for media chats
        return lane
    names = tuple(config.served_model_names) or (bundle.name,)
    lane.loras = setup_lora(config, scheduler, runner, bundle.model, names)  # adapters beside the base model
    return lane
