"""Per-request sampling parameters, validated once at the API edge."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import InvalidParameter
from engine.structured_output import StructuredOutput


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    # None: no logprobs. k >= 0: the sampled token's logprob plus the k most likely alternatives.
    logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # vLLM's extras. min_tokens: EOS and stop_token_ids are masked (and stop strings not matched) until
    # this many tokens are out. allowed_token_ids: only these may be sampled. bad_words_ids: token
    # sequences never generated (the last token of one is banned where the output ends with the rest).
    min_tokens: int = 0
    allowed_token_ids: list[int] | None = None
    bad_words_ids: list[list[int]] = field(default_factory=list)
    # None: none. k >= 0: each prompt token's logprob (and the k most likely), from the same prefill.
    prompt_logprobs: int | None = None
    # Constrained decoding (engine/structured_output.py); None: unconstrained
    structured: StructuredOutput | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5

    def validate(self, vocab_size: int) -> None:
        """Raise InvalidParameter for the first bad field; the API layer turns it into a 400."""
        if self.max_tokens < 1:
            raise InvalidParameter("max_tokens", "max_tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidParameter("temperature", "temperature must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidParameter("top_p", "top_p must be in (0, 1]")
        if self.top_k < -1:
            raise InvalidParameter("top_k", "top_k must be -1, 0 (disabled) or positive")
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidParameter("min_p", "min_p must be in [0, 1]")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise InvalidParameter("presence_penalty", "presence_penalty must be between -2 and 2")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise InvalidParameter("frequency_penalty", "frequency_penalty must be between -2 and 2")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise InvalidParameter("repetition_penalty", "repetition_penalty must be in (0, 2]")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise InvalidParameter("top_logprobs", "top_logprobs must be between 0 and 20")
        for token_id, bias in self.logit_bias.items():
            if not 0 <= token_id < vocab_size:
                raise InvalidParameter(
                    "logit_bias", f"logit_bias token id {token_id} is outside the vocabulary"
                )
            if not -100.0 <= bias <= 100.0:
                raise InvalidParameter("logit_bias", "logit_bias values must be between -100 and 100")
        for token_id in self.stop_token_ids:
            if not 0 <= token_id < vocab_size:
                raise InvalidParameter(
                    "stop_token_ids", f"stop_token_ids entry {token_id} is outside the vocabulary"
                )
        self._validate_extras(vocab_size)

    def _validate_extras(self, vocab_size: int) -> None:
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidParameter("min_tokens", "min_tokens must be between 0 and max_tokens")
        if self.prompt_logprobs is not None and not 0 <= self.prompt_logprobs <= 20:
            raise InvalidParameter("prompt_logprobs", "prompt_logprobs must be between 0 and 20")
        if self.allowed_token_ids is not None:
            if not self.allowed_token_ids:
                raise InvalidParameter("allowed_token_ids", "allowed_token_ids must not be empty")
            if any(not 0 <= t < vocab_size for t in self.allowed_token_ids):
                raise InvalidParameter(
                    "allowed_token_ids", "allowed_token_ids has ids outside the vocabulary"
                )
        for word in self.bad_words_ids:
            if not word or any(not 0 <= t < vocab_size for t in word):
                raise InvalidParameter("bad_words", "a bad word must be a non-empty run of vocabulary ids")
