"""POST /v1/embeddings, /pooling and /classify bodies: OpenAI's embeddings API plus vLLM's pooling extras."""

from __future__ import annotations

import base64
import time
from typing import Literal

import numpy as np
from pydantic import Field

from http_api.errors import bad_request
from http_api.protocol_openai.chat import ChatMessage
from http_api.protocol_openai.common import RequestModel, ResponseModel, Usage, new_id

EmbeddingInput = str | list[str] | list[int] | list[list[int]]
EncodingFormat = Literal["float", "base64"]


class PoolingFields(RequestModel):
    """What every pooling route takes (vLLM's names)."""

    model: str | None = None  # None: the first pooling model served
    user: str | None = None  # accepted, ignored
    # Cut each input to this many tokens (-1: the model's max length) instead of refusing a long one.
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    truncation_side: Literal["left", "right"] | None = None  # right (the default) keeps the first tokens
    # Embeddings: L2-normalize; classify and score: softmax / sigmoid. None: the model's default.
    use_activation: bool | None = None


class EmbeddingRequest(PoolingFields):
    input: EmbeddingInput | None = None
    messages: list[ChatMessage] | None = None  # vLLM: one chat-style input, for chat-embedding models
    encoding_format: EncodingFormat = "float"
    dimensions: int | None = Field(None, ge=1)  # matryoshka models only
    normalize: bool | None = None  # vLLM's older name for use_activation
    add_special_tokens: bool | None = (
        None  # default: true for input, false for messages (the template adds them)
    )
    add_generation_prompt: bool = False  # with messages

    def inputs(self) -> list[str | list[int]]:
        if (self.input is None) == (self.messages is None):
            raise bad_request("give exactly one of 'input' or 'messages'", param="input")
        return [] if self.input is None else as_prompts(self.input)

    def activation(self) -> bool | None:
        if (
            self.normalize is not None
            and self.use_activation is not None
            and self.normalize != self.use_activation
        ):
            raise bad_request("normalize and use_activation disagree; give one of them", param="normalize")
        return self.use_activation if self.normalize is None else self.normalize


class PoolingBody(EmbeddingRequest):
    """POST /pooling: the model's pooled output as it is (an embedding model's vector, a classifier's
    class probabilities)."""

    task: Literal["embed", "classify"] | None = None  # None: what the model does


class ClassificationRequest(PoolingFields):
    input: EmbeddingInput
    add_special_tokens: bool = True

    def inputs(self) -> list[str | list[int]]:
        return as_prompts(self.input)


def as_prompts(value: EmbeddingInput) -> list[str | list[int]]:
    """A text, a list of texts, one prompt's token ids, or a list of those: one entry per prompt."""
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [value]  # type: ignore[list-item]  # one prompt as token ids
    return list(value)  # type: ignore[arg-type]


def encode_vector(vector: np.ndarray, encoding_format: EncodingFormat) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes (what the openai SDK decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


class EmbeddingData(ResponseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(ResponseModel):
    id: str = Field(default_factory=lambda: new_id("embd"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[EmbeddingData]
    usage: Usage


class PoolingData(ResponseModel):
    index: int
    object: Literal["pooling"] = "pooling"
    data: list[float] | str


class PoolingResponse(ResponseModel):
    id: str = Field(default_factory=lambda: new_id("pool"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[PoolingData]
    usage: Usage


class ClassificationData(ResponseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(ResponseModel):
    id: str = Field(default_factory=lambda: new_id("classify"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ClassificationData]
    usage: Usage


def prompt_usage(tokens: int) -> Usage:
    return Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
