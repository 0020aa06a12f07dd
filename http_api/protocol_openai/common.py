"""What the OpenAI bodies share: strict request models, ids, sampling fields and usage."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from engine.sampling import SamplingParams
from http_api.errors import bad_request
from http_api.structured_outputs import StructuredFields

# Seeds must fit torch.Generator.manual_seed (it takes up to 2**64 - 1, which leaves room for seed + i).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def token_id_bias(logit_bias: dict[str, float] | None) -> dict[int, float]:
    """A request's logit_bias (JSON keys are strings) keyed by token id; 400 for a key that is not one.
    OpenAI's routes and SGLang's /generate share it."""
    bias: dict[int, float] = {}
    for key, value in (logit_bias or {}).items():
        try:
            bias[int(key)] = value
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got '{key}'", param="logit_bias") from None
    return bias


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(RequestModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted, ignored: there is nothing to obfuscate locally


class SamplingFields(RequestModel, StructuredFields):
    """Sampling options shared by chat and completions (OpenAI names plus vLLM's extras, and the
    constrained-output fields)."""

    model: str | None = None  # None: the served LLM
    frequency_penalty: float | None = 0.0
    presence_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    user: str | None = None  # accepted, ignored
    # vLLM extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    min_tokens: int = Field(0, ge=0)
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None  # tokenized by the route (http_api/llm_options.py)
    truncate_prompt_tokens: int | None = Field(None, ge=-1)  # -1: the model's context length
    truncation_side: Literal["left", "right"] | None = None  # None: left (keep the last tokens)
    prompt_logprobs: int | None = None
    return_token_ids: bool | None = None
    best_of: int | None = Field(None, ge=1)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if any(not s for s in stops):
            raise bad_request("stop strings must not be empty", param="stop")
        return stops

    def to_sampling_params(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            min_p=self.min_p or 0.0,
            seed=self.seed,
            stop=self.stop_list(),
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias=token_id_bias(self.logit_bias),
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output,
            min_tokens=self.min_tokens,
            allowed_token_ids=None if self.allowed_token_ids is None else list(self.allowed_token_ids),
        )

    def check_vllm_options(self) -> None:
        if self.prompt_logprobs is not None and self.stream:
            raise bad_request(
                "prompt_logprobs are not available when stream is true", param="prompt_logprobs"
            )
        if self.best_of is not None:
            if self.best_of < self.n:
                raise bad_request(f"best_of ({self.best_of}) must be at least n ({self.n})", param="best_of")
            if self.best_of > self.n and self.stream:
                raise bad_request("best_of greater than n cannot be streamed", param="best_of")

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true", param="stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class VLLMExtrasResponse(ResponseModel):
    """A reply with vLLM-only fields (listed in VLLM_EXTRAS) that are left out when None: a request that
    does not ask for them gets OpenAI's shape."""

    VLLM_EXTRAS: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _drop_unasked(self, handler: Any) -> Any:
        data = handler(self)
        for name in self.VLLM_EXTRAS:
            if name in data and data[name] is None:
                del data[name]
        return data


class PromptLogprob(ResponseModel):
    """vLLM's Logprob: one entry of a prompt_logprobs position, keyed there by token id."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
