"""Turn a batch of logits into one token per sequence, honouring each request's sampling params."""

from __future__ import annotations

import torch

from engine.llm.sequence import Sequence, StepTokens
from engine.request import TokenLogprob, TopLogprob


def _needs_processing(seq: Sequence) -> bool:
    p = seq.params
    return bool(p.logit_bias or p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0)


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
    return int(torch.multinomial(probs, 1, generator=generator))


def _logprob(logprobs: torch.Tensor, token_id: int, top_n: int) -> TokenLogprob:
    top: list[TopLogprob] = []
    if top_n > 0:
        values, ids = logprobs.topk(top_n)
        top = [TopLogprob(int(i), float(v)) for v, i in zip(values, ids, strict=True)]
    return TokenLogprob(token_id, float(logprobs[token_id]), top)


def sample(
    logits: torch.Tensor, seqs: list[Sequence], generators: list[torch.Generator | None]
) -> list[StepTokens]:
    """logits: [len(seqs), vocab] fp32; generators: each row's seeded RNG, or None for the global one.
    Logprobs come from the model's raw distribution."""
    plain_greedy = [s.params.greedy and not _needs_processing(s) for s in seqs]
    argmax = logits.argmax(dim=-1).tolist() if any(plain_greedy) else []
    results: list[StepTokens] = []
    for i, seq in enumerate(seqs):
        if plain_greedy[i]:
            token_id = argmax[i]
        else:
            row = _apply_penalties(logits[i], seq) if _needs_processing(seq) else logits[i]
            token_id = _sample_row(row, seq, generators[i])
        logprob = None
        if seq.params.logprobs is not None:
            logprob = _logprob(torch.log_softmax(logits[i], dim=-1), token_id, seq.params.logprobs)
        results.append(StepTokens(token_id, logprob))
    return results
