"""POST /v1/completions bodies (the legacy text-completion API)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from http_api.errors import bad_request, unsupported
from http_api.protocol_openai.common import ResponseModel, SamplingFields, Usage


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    echo: bool | None = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    def check_supported(self) -> None:
        self.check_stream_options()
        if self.suffix:
            raise unsupported("suffix", "insertion (fill-in-the-middle) is not available")
        if self.best_of is not None and self.best_of != self.n:
            raise unsupported("best_of", "only best_of == n is available")
        if self.echo and self.logprobs is not None:
            raise unsupported(
                "echo", "prompt logprobs are not computed, so echo cannot be combined with logprobs"
            )

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("prompt must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        if all(isinstance(x, str) for x in p) or all(isinstance(x, list) for x in p):
            return list(p)  # type: ignore[arg-type]
        raise bad_request(
            "prompt must be a string, a list of strings or a list of token-id lists", param="prompt"
        )


class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None
    system_fingerprint: str | None = None
