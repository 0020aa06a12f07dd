"""POST /v1/completions bodies (the legacy text-completion API)."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from http_api.errors import bad_request, unsupported
from http_api.protocol_openai.common import (
    PromptLogprob,
    ResponseModel,
    SamplingFields,
    Usage,
    VLLMExtrasResponse,
)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = 16
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None
    add_special_tokens: bool = True  # vLLM's: the tokenizer's BOS (if it adds one) before a text prompt

    def check_supported(self) -> None:
        self.check_stream_options()
        self.check_vllm_options()
        if self.suffix:
            raise unsupported("suffix", "insertion (fill-in-the-middle) is not available")

    def engine_prompt_logprobs(self) -> int | None:
        """prompt_logprobs, or with echo the logprobs asked for (the echoed prompt carries them)."""
        if self.prompt_logprobs is not None:
            return self.prompt_logprobs
        return self.logprobs if self.echo else None

    @property
    def echo_only(self) -> bool:
        """echo with max_tokens 0: the prompt (and its logprobs) back, nothing generated (scoring a text)."""
        return bool(self.echo) and self.max_tokens == 0

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


class CompletionChoice(VLLMExtrasResponse):
    VLLM_EXTRAS = ("prompt_logprobs", "prompt_token_ids", "token_ids")

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None
    prompt_logprobs: list[dict[int, PromptLogprob] | None] | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class Completion(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None
    system_fingerprint: str | None = None
