"""GET /v1/models, POST /tokenize and /detokenize bodies."""

from __future__ import annotations

from typing import Any, Literal

from http_api.errors import bad_request
from http_api.protocol_openai.chat import ChatMessage
from http_api.protocol_openai.common import RequestModel, ResponseModel


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rtserve"
    max_model_len: int | None = None
    task: str | None = None  # pooling models: embed, classify or score (vLLM's task names)
    # The LLM: the sampling values a request that leaves them unset gets (--generation-config)
    generation_defaults: dict[str, float | int] | None = None
    # A LoRA adapter (vLLM's fields): the directory it was loaded from, and the base model it runs on
    root: str | None = None
    parent: str | None = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    chat_template: str | None = None  # vLLM's: refused unless --trust-request-chat-template
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
