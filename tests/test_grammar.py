"""The grammar layer of the LLM lane on the real SmolLM2 tokenizer: masks, the compile cache, start_after."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch
from transformers import AutoTokenizer

from engine.config import default_cache_dir
from engine.errors import InvalidParameter
from engine.llm.grammar.compiler import GrammarCompiler
from engine.llm.grammar.masks import GrammarMasks, StepMasks
from engine.llm.grammar.matcher import SequenceMatcher
from engine.llm.sequence import Sequence, StepTokens
from engine.models.llm_loader import load_llm
from engine.request import Priority
from engine.sampling import SamplingParams
from engine.structured_output import StructuredOutput

SCHEMA = StructuredOutput(
    "json_schema", json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
)
EOS = 2


@pytest.fixture(scope="module")
def hf_tokenizer():
    cached = default_cache_dir() / "llm" / "smollm2-135m-instruct"
    if cached.is_dir():  # converted by an earlier start: the tokenizer alone loads in a moment
        return AutoTokenizer.from_pretrained(cached)
    return load_llm("smollm2-135m-instruct", default_cache_dir(), "cpu").tokenizer


@pytest.fixture(scope="module")
def compiler(hf_tokenizer) -> GrammarCompiler:
    return GrammarCompiler(hf_tokenizer, 49152, [EOS])


def allowed(bitmask_row: torch.Tensor, vocab: int) -> set[int]:
    logits = torch.zeros(1, vocab)
    StepMasks([0], bitmask_row[None]).apply(logits)
    return set(torch.isfinite(logits[0]).nonzero().flatten().tolist())


def test_masks_apply_in_place_to_their_rows_only() -> None:
    words = torch.zeros(2, 3, dtype=torch.int32)
    words[0, 0] = 1 | -(2**31)  # tokens 0 and 31 (the sign bit)
    words[0, 1] = 1  # token 32
    words[1, 2] = 1 << 5  # token 69
    logits = torch.randn(3, 70)
    kept = logits[1].clone()
    StepMasks([0, 2], words).apply(logits)
    assert set(torch.isfinite(logits[0]).nonzero().flatten().tolist()) == {0, 31, 32}
    assert set(torch.isfinite(logits[2]).nonzero().flatten().tolist()) == {69}
    assert torch.equal(logits[1], kept)


def test_compile_once_and_the_eos_only_mask(compiler: GrammarCompiler) -> None:
    spec = StructuredOutput("regex", r"[a-z]{3}-\d+")
    started = time.perf_counter()
    first = compiler.compile(spec)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert compiler.compile(StructuredOutput("regex", r"[a-z]{3}-\d+", param="other")) is first
    assert time.perf_counter() - started < cold
    assert allowed(GrammarMasks(compiler)._eos_only, 49152) == {EOS}
    with pytest.raises(InvalidParameter) as caught:
        compiler.compile(StructuredOutput("json_schema", '{"type": "nope"}', param="response_format"))
    assert caught.value.param == "response_format" and "nope" in caught.value.message


def test_start_after_is_dormant_until_the_marker(compiler: GrammarCompiler, hf_tokenizer) -> None:
    matcher = SequenceMatcher(compiler.compile(SCHEMA), compiler.tokenizer, "</think>")
    for token in hf_tokenizer.encode("Hmm, a </thin> number.</think>", add_special_tokens=False):
        assert not matcher.active
        matcher.advance(token)
    assert matcher.active and matcher.matcher is not None
    for token in hf_tokenizer.encode('{"a": 42}', add_special_tokens=False):
        matcher.advance(token)
    assert not matcher.matcher.is_error(), matcher.matcher.get_error()
    assert matcher.matcher.is_accepting()
    # Text after the marker in the token that completed it is the grammar's: "={" completes "END=" and
    # brings the object's opening text
    matcher = SequenceMatcher(compiler.compile(SCHEMA), compiler.tokenizer, "END=")
    tokens = hf_tokenizer.encode('END={"a": 1}', add_special_tokens=False)
    assert any(hf_tokenizer.decode([t]).startswith("={") for t in tokens)
    for token in tokens:
        matcher.advance(token)
    assert matcher.matcher is not None and matcher.matcher.is_accepting(), matcher.matcher.get_error()


def test_unconstrained_batches_get_no_masks_and_matchers_are_released(compiler: GrammarCompiler) -> None:
    masks = GrammarMasks(compiler)
    queue: asyncio.Queue = asyncio.Queue()
    free = [Sequence([1, 2, 3], SamplingParams(), Priority.BATCH, queue) for _ in range(4)]
    assert masks.for_step(free) is None and not masks.matchers
    constrained = Sequence([1, 2, 3], SamplingParams(structured=SCHEMA), Priority.BATCH, queue)
    step = masks.for_step([*free, constrained])
    assert step is not None and step.rows == [4]
    first = allowed(step.bitmask[0], 49152)
    assert hf_brace(compiler) in first  # an object must start with "{", and nothing else may come first
    assert all(compiler.tokenizer.decode_str([t]).startswith("{") for t in first)
    masks.advance([*free, constrained], [StepTokens(0, None)] * 4 + [StepTokens(hf_brace(compiler), None)])
    assert not masks.matchers[constrained.seq_id].matcher.is_error()
    masks.release([constrained.seq_id])
    assert not masks.matchers


def hf_brace(compiler: GrammarCompiler) -> int:
    (brace,) = compiler.tokenizer.tokenize_str("{")
    return brace
