"""Turn a batch of logits into one token per sequence, honouring each request's sampling params."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from engine.llm.sequence import Sequence, StepTokens
from engine.request import TokenLogprob, TopLogprob

if TYPE_CHECKING:
    from engine.llm.grammar.masks import StepMasks


def _needs_processing(seq: Sequence) -> bool:
    p = seq.params
    return bool(
        p.logit_bias or p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0
        or p.allowed_token_ids or p.bad_words_ids or len(seq.output_token_ids) < p.min_tokens
    )  # fmt: skip


def _banned(seq: Sequence, eos_token_ids: frozenset[int]) -> list[int]:
    """Token ids this step may not sample: stop tokens before min_tokens, and bad words' last tokens."""
    p = seq.params
    banned: set[int] = set()
    if len(seq.output_token_ids) < p.min_tokens:
        banned.update(p.stop_token_ids)
        if not p.ignore_eos:
            banned.update(eos_token_ids)
    out = seq.output_token_ids
    for word in p.bad_words_ids:
        prefix = word[:-1]
        if not prefix or (len(out) >= len(prefix) and out[len(out) - len(prefix) :] == prefix):
            banned.add(word[-1])
    return sorted(banned)


def _apply_masks(row: torch.Tensor, seq: Sequence, eos_token_ids: frozenset[int]) -> torch.Tensor:
    """allowed_token_ids, min_tokens and bad_words as -inf logits. If they leave nothing, the row is kept
    as it was (sampling from nothing is not possible; the request's own options contradict each other)."""
    masked = row
    allowed = seq.params.allowed_token_ids
    if allowed:
        keep = torch.tensor(allowed, dtype=torch.long, device=row.device)
        masked = torch.full_like(row, float("-inf")).index_copy_(0, keep, row[keep])
    banned = _banned(seq, eos_token_ids)
    if banned:
        masked = masked.clone() if masked is row else masked
        masked[torch.tensor(banned, dtype=torch.long, device=row.device)] = float("-inf")
    return masked if bool(torch.isfinite(masked).any()) else row


def _apply_penalties(row: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.params
    row = row.clone()
    if p.repetition_penalty != 1.0:  # HF/vLLM semantics: prompt and output tokens alike
        seen = torch.tensor(sorted(set(seq.all_token_ids)), dtype=torch.long, device=row.device)
        vals = row[seen]
        row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if (p.presence_penalty or p.frequency_penalty) and seq.output_token_ids:  # OpenAI: output tokens only
        ids, counts = torch.tensor(seq.output_token_ids, device=row.device).unique(return_counts=True)
        row[ids] -= p.frequency_penalty * counts.to(row.dtype) + p.presence_penalty
    for token_id, bias in p.logit_bias.items():
        row[token_id] += bias
    return row


def _sample_row(row: torch.Tensor, seq: Sequence, generator: torch.Generator | None) -> int:
    p = seq.params
    if p.greedy:
        return int(row.argmax())
    row = row / p.temperature
    if p.top_k > 0 and p.top_k < row.shape[-1]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if p.min_p > 0.0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    if p.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cumulative = sorted_probs.cumsum(-1)
        drop = cumulative - sorted_probs > p.top_p  # keep the smallest prefix reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return _draw(probs, generator)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token by inverse CDF: the first whose running total passes a uniform draw (a zero-probability token
    spans nothing, so it is never drawn). Over a 49k vocabulary on a CPU torch.multinomial costs ~1.2 ms, this
    ~0.06 ms (clients/bench_decode_step.py)."""
    cumulative = probs.double().cumsum(0)
    point = torch.rand(1, generator=generator, dtype=torch.float64) * cumulative[-1]
    return min(int(torch.searchsorted(cumulative, point, right=True)), probs.shape[0] - 1)


def _logprob(logprobs: torch.Tensor, token_id: int, top_n: int) -> TokenLogprob:
    top: list[TopLogprob] = []
    if top_n > 0:
        values, ids = logprobs.topk(top_n)
        top = [TopLogprob(int(i), float(v)) for v, i in zip(values, ids, strict=True)]
    return TokenLogprob(token_id, float(logprobs[token_id]), top)


def sample(
    logits: torch.Tensor,
    seqs: list[Sequence],
    generators: list[torch.Generator | None],
    eos_token_ids: frozenset[int] = frozenset(),
    grammar: StepMasks | None = None,
) -> list[StepTokens]:
    """logits: [len(seqs), vocab] fp32 on the CPU; generators: each row's seeded RNG, or None for the global
    one; eos_token_ids: what min_tokens holds back; grammar: the constrained rows' token masks, applied
    first (in place). Logprobs come from the model's raw distribution."""
    raw = logits
    if grammar is not None:
        if any(seqs[i].params.logprobs is not None for i in grammar.rows):
            raw = logits.clone()
        grammar.apply(logits)
    plain_greedy = [s.params.greedy and not _needs_processing(s) for s in seqs]
    argmax = logits.argmax(dim=-1).tolist() if any(plain_greedy) else []
    results: list[StepTokens] = []
    for i, seq in enumerate(seqs):
        if plain_greedy[i]:
            token_id = argmax[i]
        else:
            row = logits[i]
            if _needs_processing(seq):
                row = _apply_masks(_apply_penalties(row, seq), seq, eos_token_ids)
            token_id = _sample_row(row, seq, generators[i])
        logprob = None
        if seq.params.logprobs is not None:
            logprob = _logprob(torch.log_softmax(raw[i], dim=-1), token_id, seq.params.logprobs)
        results.append(StepTokens(token_id, logprob))
    return results


def prompt_logprobs(logits: torch.Tensor, targets: list[int], top_n: int) -> list[TokenLogprob]:
    """logits: [len(targets), vocab], row j the model's prediction for targets[j]. Each target's logprob,
    its rank (1: the most likely) and the top_n most likely tokens, from the raw distribution."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    ids = torch.tensor(targets, dtype=torch.long, device=logits.device)
    chosen = logprobs.gather(1, ids[:, None])
    ranks = (logprobs > chosen).sum(dim=-1) + 1
    top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n > 0 else (None, None)
    out: list[TokenLogprob] = []
    chosen_list, rank_list = chosen[:, 0].tolist(), ranks.tolist()
    top_v = top_values.tolist() if top_values is not None else [[] for _ in targets]
    top_i = top_ids.tolist() if top_ids is not None else [[] for _ in targets]
    for j, token_id in enumerate(targets):
        top = [TopLogprob(int(t), float(v)) for t, v in zip(top_i[j], top_v[j], strict=True)]
        out.append(TokenLogprob(token_id, float(chosen_list[j]), top, rank=int(rank_list[j])))
    return out
