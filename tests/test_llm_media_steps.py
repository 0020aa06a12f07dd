"""The LLM scheduler's media budget (pure Python): a prefill step carries at most --max-prefill-media images,
and after such a step the running sequences decode before the next one, so image uploads never freeze the
token streams already under way."""

from __future__ import annotations

import asyncio

from engine.llm.blocks import BlockManager
from engine.llm.detokenizer import IncrementalDetokenizer
from engine.llm.scheduler import LLMBatch, LLMScheduler
from engine.llm.sequence import Sequence, StepTokens
from engine.request import Priority
from engine.sampling import SamplingParams
from engine.stats import EngineStats
from engine.vision.inputs import MultimodalInputs, ProcessedMedia


class LetterTokenizer:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def sequence(images: int) -> Sequence:
    media = [ProcessedMedia("image", f"hash{i}", {}, num_tokens=4) for i in range(images)]
    seq = Sequence([1] * 8, SamplingParams(max_tokens=4, ignore_eos=True), Priority.BATCH, asyncio.Queue())
    seq.multimodal = MultimodalInputs(media) if images else None
    seq.detokenizer = IncrementalDetokenizer(LetterTokenizer(), [], True, False)
    return seq


def step(scheduler: LLMScheduler) -> LLMBatch | None:
    batch = scheduler.schedule()
    if batch is None:
        return None
    made = [[StepTokens(token_id=5, logprob=None)] for _ in batch.seqs]
    scheduler.postprocess(batch, made)
    return batch


def plan(max_prefill_media: int, waiting: list[Sequence]) -> list[tuple[str, int]]:
    scheduler = LLMScheduler(
        BlockManager(64, 16), 8, 2048, 256, [2], EngineStats(), max_prefill_media=max_prefill_media
    )
    for seq in waiting:
        scheduler.add(seq)
    steps: list[tuple[str, int]] = []
    while len(steps) < 6 and (batch := step(scheduler)) is not None:
        media = sum(len(s.multimodal.items) for s in batch.seqs if s.multimodal is not None)
        steps.append(
            ("prefill" if batch.is_prefill else "decode", media if batch.is_prefill else len(batch.seqs))
        )
    return steps


def test_one_image_a_step_with_decodes_between() -> None:
    text, first, second, third = sequence(0), sequence(1), sequence(1), sequence(2)
    assert plan(1, [text, first, second, third]) == [
        ("prefill", 1),  # the text request and the first image (at least one always goes)
        ("decode", 2),  # owed: the running two get a token before the next image
        ("prefill", 1),
        ("decode", 3),
        ("prefill", 2),  # a request with two images goes alone
        ("decode", 4),
    ]


def test_a_larger_budget_batches_the_images_of_several_requests() -> None:
    assert plan(16, [sequence(1), sequence(1), sequence(2)])[:2] == [("prefill", 4), ("decode", 3)]


def test_text_only_prefills_owe_no_decode() -> None:
    assert [kind for kind, _ in plan(1, [sequence(0)])][:2] == ["prefill", "decode"]
    scheduler = LLMScheduler(BlockManager(64, 16), 8, 2048, 256, [2], EngineStats(), max_prefill_media=1)
    scheduler.add(sequence(0))
    step(scheduler)
    scheduler.add(sequence(0))
    batch = step(scheduler)
    assert batch is not None and batch.is_prefill  # a text prefill goes ahead of the decode, as before
