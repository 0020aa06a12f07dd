"""vLLM's prompt and sampling options that the chat and completion routes share: prompt truncation, bad words
as token ids, prompt logprobs in vLLM's shape, and best_of (the n most likely of best_of samples)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from engine.interface import EngineClient
from engine.request import TokenLogprob
from engine.sampling import SamplingParams
from http_api.errors import bad_request
from http_api.generation import Collected, clamp_logprob, token_text
from http_api.protocol_openai.common import PromptLogprob, SamplingFields


def truncate_prompt(
    ids: list[int], keep: int | None, side: Literal["left", "right"] | None, max_model_len: int
) -> list[int]:
    """truncate_prompt_tokens: the last `keep` ids (side "left", the default) or the first ("right");
    -1 keeps as many as the model's context holds. None: the ids unchanged."""
    if keep is None:
        return ids
    if keep == -1:
        keep = max_model_len
    if keep > max_model_len:
        raise bad_request(
            f"truncate_prompt_tokens ({keep}) is greater than the model's context length ({max_model_len})",
            param="truncate_prompt_tokens",
        )
    if len(ids) <= keep:
        return ids
    return ids[:keep] if side == "right" else ids[len(ids) - keep :]


def bad_words_ids(tokenizer: Any, words: list[str]) -> list[list[int]]:
    """Each bad word as token ids, spelled as it starts a text and as it follows a space (which BPE
    tokenizers spell differently): both are kept from the output."""
    found: list[list[int]] = []
    for i, word in enumerate(words):
        stripped = word.strip()
        if not stripped:
            raise bad_request(f"bad_words[{i}] is empty", param=f"bad_words[{i}]")
        for spelling in (stripped, " " + stripped):
            ids = list(tokenizer.encode(spelling, add_special_tokens=False))
            if ids and ids not in found:
                found.append(ids)
    return found


def engine_params(
    params: SamplingParams, req: SamplingFields, engine: EngineClient, prompt_logprobs: int | None
) -> SamplingParams:
    """`params` plus what needs the tokenizer or the route: bad words, prompt logprobs, and the sampled
    tokens' logprobs that best_of ranks by (asked for here; a reply shows them only if the client did)."""
    extra: dict[str, Any] = {"prompt_logprobs": prompt_logprobs, "structured": req.structured_output()}
    if req.bad_words:
        extra["bad_words_ids"] = bad_words_ids(engine.tokenizer, req.bad_words)
    if (req.best_of or req.n) > req.n and params.logprobs is None:
        extra["logprobs"] = 0
    return dataclasses.replace(params, **extra)


def samples_per_prompt(req: SamplingFields) -> int:
    return max(req.n, req.best_of or 1)


def cumulative_logprob(result: Collected) -> float:
    return sum(lp.logprob for lp in result.logprobs)


def best_of(results: list[Collected], n: int, samples: int) -> list[Collected]:
    """Of each prompt's `samples` results (consecutive), the n with the highest cumulative logprob, best
    first; unchanged when every sample is returned."""
    if samples == n:
        return results
    picked: list[Collected] = []
    for start in range(0, len(results), samples):
        group = results[start : start + samples]
        picked += sorted(group, key=cumulative_logprob, reverse=True)[:n]
    return picked


def prompt_logprobs_json(
    tokenizer: Any, prompt_ids: list[int], logprobs: list[TokenLogprob | None] | None
) -> list[dict[int, PromptLogprob] | None] | None:
    """vLLM's prompt_logprobs: per prompt token None (the first) or {token id: {logprob, rank,
    decoded_token}} for the prompt token and the most likely alternatives."""
    if logprobs is None:
        return None
    out: list[dict[int, PromptLogprob] | None] = []
    for token_id, lp in zip(prompt_ids, logprobs, strict=True):
        if lp is None:
            out.append(None)
            continue
        entry = {
            token_id: PromptLogprob(
                logprob=clamp_logprob(lp.logprob), rank=lp.rank, decoded_token=token_text(tokenizer, token_id)
            )
        }
        for rank, alt in enumerate(lp.top, start=1):
            entry.setdefault(
                alt.token_id,
                PromptLogprob(
                    logprob=clamp_logprob(alt.logprob),
                    rank=rank,
                    decoded_token=token_text(tokenizer, alt.token_id),
                ),
            )
        out.append(entry)
    return out
