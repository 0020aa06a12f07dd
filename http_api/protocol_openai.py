"""OpenAI-compatible request and response bodies (chat, completions, audio, models, tokenize).

Requests forbid unknown fields, so a typo or an unsupported option is a 400 naming it, not silently
ignored. Options we accept but do not act on (user, metadata, ...) are declared and documented.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.sampling import SamplingParams
from http_api.errors import APIError, bad_request, unsupported

# Seeds must fit torch.Generator.manual_seed (it takes up to 2**64 - 1, which leaves room for seed + i).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- shared


class StreamOptions(RequestModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted, ignored: there is nothing to obfuscate locally


class SamplingFields(RequestModel):
    """Sampling options shared by chat and completions (OpenAI names plus vLLM's extras)."""

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

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if any(not s for s in stops):
            raise bad_request("stop strings must not be empty", param="stop")
        return stops

    def logit_bias_ids(self) -> dict[int, float]:
        bias: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                bias[int(key)] = value
            except ValueError:
                raise bad_request(
                    f"logit_bias keys must be token ids, got '{key}'", param="logit_bias"
                ) from None
        return bias

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
            logit_bias=self.logit_bias_ids(),
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output,
        )

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true", param="stream_options")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


# ---------------------------------------------------------------------------------------------- chat

MEDIA_PART_TYPES = ("image_url", "input_image", "image", "input_audio", "audio_url", "file", "video_url")


class ChatMessage(RequestModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any | None = None
    refusal: str | None = None

    def to_template(self, index: int) -> dict[str, str]:
        """The {role, content} dict a chat template expects; anything the model cannot take is a 400."""
        where = f"messages[{index}]"
        if self.role in ("tool", "function"):
            raise unsupported(f"{where}.role", "tool calling is not supported")
        if self.tool_calls or self.function_call:
            raise unsupported(f"{where}.tool_calls", "tool calling is not supported")
        role = "system" if self.role == "developer" else self.role
        if self.content is None:
            if role != "assistant":
                raise bad_request(
                    f"{where}.content is required for role '{self.role}'", param=f"{where}.content"
                )
            return {"role": role, "content": ""}
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        texts: list[str] = []
        for j, part in enumerate(self.content):
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in MEDIA_PART_TYPES:
                raise APIError(
                    f"{where}.content[{j}] is a '{kind}' part, but the served model only reads text",
                    param=f"{where}.content[{j}].type",
                    code="unsupported_content_type",
                )
            elif kind == "refusal" and role == "assistant":
                texts.append(str(part.get("refusal", "")))
            else:
                raise bad_request(
                    f"{where}.content[{j}] must be a text part {{'type': 'text', 'text': ...}}",
                    param=f"{where}.content[{j}]",
                )
        return {"role": role, "content": "\n".join(texts)}


class ResponseFormat(RequestModel):
    type: str
    json_schema: Any | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    response_format: ResponseFormat | None = None
    modalities: list[str] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    # Accepted and ignored: they change nothing for a local, stateless server.
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Declared so they get a clear "not supported" instead of "unrecognized".
    tools: Any | None = None
    tool_choice: Any | None = None
    functions: Any | None = None
    function_call: Any | None = None
    audio: Any | None = None
    prediction: Any | None = None
    web_search_options: Any | None = None
    reasoning_effort: Any | None = None
    verbosity: Any | None = None

    def check_supported(self) -> None:
        self.check_stream_options()
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise unsupported(name, "tool calling is not supported")
        if self.tool_choice not in (None, "none"):
            raise unsupported("tool_choice", "tool calling is not supported")
        if self.function_call not in (None, "none"):
            raise unsupported("function_call", "tool calling is not supported")
        for name in ("audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"):
            if getattr(self, name) is not None:
                raise unsupported(name)
        if self.response_format is not None and self.response_format.type != "text":
            raise unsupported("response_format", "only {'type': 'text'} is available")
        if self.modalities is not None and self.modalities != ["text"]:
            raise unsupported("modalities", "the served model only writes text")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs requires logprobs to be true", param="top_logprobs")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class TopLogprobEntry(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobEntry]


class ChatChoiceLogprobs(ResponseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class AssistantMessage(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatChoice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(ResponseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    def to_json(self, with_usage_field: bool) -> dict:
        body = self.model_dump(exclude={"usage"} if not with_usage_field else None)
        for choice in body["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        return body


# ---------------------------------------------------------------------------------------------- completions


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


# ---------------------------------------------------------------------------------------------- audio


AudioResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class TranscriptionForm(BaseModel):
    """The non-file fields of /v1/audio/transcriptions and /translations (multipart, so all strings)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: AudioResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=list)
    stream: bool = False
    include: list[str] = Field(default_factory=list)
    chunking_strategy: str | None = None

    def check_supported(self) -> None:
        if "word" in self.timestamp_granularities:
            raise unsupported("timestamp_granularities", "only 'segment' timestamps are available")
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise bad_request(
                "timestamp_granularities requires response_format 'verbose_json'",
                param="timestamp_granularities",
            )
        if self.include:
            raise unsupported("include", "token logprobs are not returned for audio")
        if self.chunking_strategy is not None:
            raise unsupported("chunking_strategy", "long audio is always split into 30 s windows")
        if self.stream and self.response_format not in ("json", "text"):
            raise bad_request(
                f"stream=true is only available with response_format 'json' or 'text', not "
                f"'{self.response_format}'",
                param="stream",
            )


class DurationUsage(ResponseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionJSON(ResponseModel):
    text: str
    usage: DurationUsage


class VerboseSegment(ResponseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    # Whisper's per-segment confidence figures are not tracked by the engine: null, not made up.
    avg_logprob: float | None = None
    compression_ratio: float
    no_speech_prob: float | None = None


class TranscriptionVerboseJSON(ResponseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    usage: DurationUsage


class TranscriptTextDelta(ResponseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptTextDone(ResponseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str


# ---------------------------------------------------------------------------------------------- models, tokenize


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rtserve"
    max_model_len: int | None = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None

    def check(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise bad_request("give exactly one of 'prompt' or 'messages'", param="prompt")


class TokenizeResponse(ResponseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(ResponseModel):
    prompt: str
