"""The sampler on hand-made logits: its draw follows the distribution; the vLLM options min_tokens,
allowed_token_ids, bad_words; prompt logprobs."""

from __future__ import annotations

import asyncio

import pytest
import torch

from engine.errors import InvalidParameter
from engine.llm.sampler import prompt_logprobs, sample
from engine.llm.sequence import Sequence
from engine.request import Priority
from engine.sampling import SamplingParams

VOCAB = 8
EOS = 7


def seq(output: list[int] | None = None, **params: object) -> Sequence:
    s = Sequence([1, 2], SamplingParams(temperature=0.0, **params), Priority.BATCH, asyncio.Queue())  # type: ignore[arg-type]
    s.output_token_ids = list(output or [])
    return s


def favouring(*order: int) -> torch.Tensor:
    """Logits whose argmax is order[0], then order[1], ..."""
    row = torch.zeros(VOCAB)
    for rank, token in enumerate(order):
        row[token] = 10.0 - rank
    return row[None, :]


def greedy(s: Sequence, logits: torch.Tensor) -> int:
    return sample(logits, [s], [None], frozenset({EOS}))[0].token_id


def test_draws_follow_the_distribution_and_the_seed():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0, 0.0, 0.0, 0.0])
    logits = probs.clamp(min=1e-30).log()[None, :]
    s = Sequence([1, 2], SamplingParams(temperature=1.0, seed=5), Priority.BATCH, asyncio.Queue())  # type: ignore[arg-type]

    def draws(seed: int, n: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [sample(logits, [s], [generator])[0].token_id for _ in range(n)]

    counts = torch.bincount(torch.tensor(draws(5, 6000)), minlength=VOCAB) / 6000
    assert counts[[1, 4, 5, 6, 7]].sum() == 0  # (near-)zero-probability tokens are never drawn
    assert torch.allclose(counts[[0, 2, 3]], probs[[0, 2, 3]], atol=0.03), counts
    assert draws(9, 50) == draws(9, 50) != draws(10, 50)


def test_min_tokens_holds_back_eos_and_stop_tokens():
    logits = favouring(EOS, 5, 3)
    assert greedy(seq(), logits) == EOS
    assert greedy(seq([4], min_tokens=2), logits) == 5
    assert greedy(seq([4], min_tokens=2, stop_token_ids=[5]), logits) == 3
    assert greedy(seq([4, 4], min_tokens=2), logits) == EOS  # reached: EOS is allowed again
    assert greedy(seq([4], min_tokens=2, ignore_eos=True), logits) == EOS  # not a stop token then


def test_allowed_token_ids():
    logits = favouring(6, 2, 3)
    assert greedy(seq(allowed_token_ids=[3, 4]), logits) == 3
    sampled = sample(favouring(6, 2).repeat(50, 1), [seq(allowed_token_ids=[0, 1])] * 50, [None] * 50)
    assert {s.token_id for s in sampled} <= {0, 1}


def test_bad_words_ban_the_last_token_after_the_rest():
    logits = favouring(4, 5)
    assert greedy(seq(bad_words_ids=[[4]]), logits) == 5  # one token: always banned
    assert greedy(seq([1], bad_words_ids=[[2, 4]]), logits) == 4  # the output does not end with 2
    assert greedy(seq([1, 2], bad_words_ids=[[2, 4]]), logits) == 5
    assert greedy(seq([2, 3], bad_words_ids=[[2, 3, 4]]), logits) == 5


def test_contradictory_masks_leave_the_row_as_it_was():
    assert greedy(seq(allowed_token_ids=[EOS], min_tokens=3), favouring(2, EOS)) == 2


def test_prompt_logprobs_rank_and_top():
    logits = torch.log_softmax(torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0]]), dim=-1)
    scored = prompt_logprobs(logits, [2, 2], top_n=2)
    assert [s.rank for s in scored] == [2, 1]
    assert scored[0].logprob == float(logits[0, 2])
    assert [t.token_id for t in scored[0].top] == [0, 2]
    assert prompt_logprobs(logits, [3, 3], top_n=0)[1].top == []


def test_validation_names_the_field():
    cases = {
        "min_tokens": SamplingParams(max_tokens=2, min_tokens=3),
        "allowed_token_ids": SamplingParams(allowed_token_ids=[VOCAB]),
        "bad_words": SamplingParams(bad_words_ids=[[]]),
        "prompt_logprobs": SamplingParams(prompt_logprobs=21),
    }
    for param, params in cases.items():
        with pytest.raises(InvalidParameter) as caught:
            params.validate(VOCAB)
        assert caught.value.param == param
