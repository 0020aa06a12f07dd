"""The one bound on the work a single request may ask for: how many sequences (prompts x n) and how many
tokens (every sequence's prompt plus the most it may generate). Each LLM route checks both, the count before
it tokenizes anything and the tokens once it knows them, so a small body cannot ask for a huge batch."""

from __future__ import annotations

from engine.request import GenerationRequest
from http_api.errors import APIError
from http_api.limits import HTTPLimits


def check_sequences(limits: HTTPLimits, prompts: int, n: int = 1, prompt_param: str = "prompt") -> None:
    """400 when prompts x n passes the limit; names `n` when fewer samples would fit, else the prompts."""
    limit = limits.max_sequences_per_request
    if prompts * n <= limit:
        return
    param = "n" if n > 1 and prompts <= limit else prompt_param
    raise APIError(
        f"This request asks for {prompts * n} sequences ({prompts} prompt(s) x n={n}); the limit is {limit} "
        "per request. Send fewer prompts or a smaller n, or split the work into several requests.",
        param=param,
        code="too_many_sequences",
    )


def check_tokens(limits: HTTPLimits, requests: list[GenerationRequest], param: str) -> None:
    """400 when the prompts plus the most every sequence may generate pass the token limit."""
    limit = limits.max_tokens_per_request
    total = sum(len(r.prompt_token_ids) + r.params.max_tokens for r in requests)
    if total <= limit:
        return
    raise APIError(
        f"This request may use up to {total} tokens (prompts plus the most each sequence may generate); the "
        f"limit is {limit} per request. Lower {param}, send fewer prompts or a smaller n.",
        param=param,
        code="too_many_tokens",
    )
