"""POST /score and /rerank (also /v1/rerank, /v2/rerank) bodies, as vLLM documents them.

/score pairs text_1 with text_2 one-to-one, one-to-many or many-to-many (or vLLM's newer queries /
documents names). /rerank takes Jina's and Cohere's request (query, documents as strings or {text}
objects, top_n, return_documents) and answers in the shape both SDKs read.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from http_api.errors import bad_request
from http_api.protocol_openai.common import RequestModel, ResponseModel, Usage, new_id
from http_api.protocol_openai.embeddings import PoolingFields

ScoreInput = str | list[str]


class ScoreRequest(PoolingFields):
    text_1: ScoreInput | None = None
    text_2: ScoreInput | None = None
    queries: ScoreInput | None = None  # vLLM's newer names for text_1 / text_2
    documents: ScoreInput | None = None
    encoding_format: Literal["float"] | None = None  # accepted (vLLM's examples send it); scores are floats

    def pairs(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """The pairs to score, and the engine's side names (text_1, text_2) -> this request's."""
        given = [(a, b) for a, b in NAMES if getattr(self, a) is not None or getattr(self, b) is not None]
        if len(given) != 1:
            raise bad_request("give text_1 and text_2, or queries and documents", param="text_1")
        first, second = given[0]
        left, right = side(getattr(self, first), first), side(getattr(self, second), second)
        if len(left) == 1:
            left = left * len(right)
        elif len(left) != len(right):
            raise bad_request(
                f"{first} and {second} must be 1:1, 1:N or N:N; got {len(left)} and {len(right)} texts",
                param=second,
            )
        return list(zip(left, right, strict=True)), {"text_1": first, "text_2": second}


NAMES = (("text_1", "text_2"), ("queries", "documents"))


class RerankDocument(RequestModel):
    text: str


class RerankRequest(PoolingFields):
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = Field(None, ge=0)  # None or 0: every document
    return_documents: bool = True

    def texts(self) -> list[str]:
        check_texts([self.query], "query", single=True)
        texts = [d if isinstance(d, str) else d.text for d in self.documents]
        check_texts(texts, "documents")
        return texts


def side(value: ScoreInput | None, param: str) -> list[str]:
    """One side of /score as a list of texts; a missing, empty or blank side is a 400 naming it."""
    if value is None:
        raise bad_request(
            f"Missing required parameter: '{param}'", param=param, code="missing_required_parameter"
        )
    texts = [value] if isinstance(value, str) else list(value)
    check_texts(texts, param, single=isinstance(value, str))
    return texts


def check_texts(texts: list[str], param: str, single: bool = False) -> None:
    if not texts:
        raise bad_request(f"{param} must not be empty", param=param)
    for i, text in enumerate(texts):
        if not text:
            where = param if single else f"{param}[{i}]"
            raise bad_request(f"{where} is an empty string", param=where)


class ScoreData(ResponseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(ResponseModel):
    id: str = Field(default_factory=lambda: new_id("score"))
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ScoreData]
    usage: Usage


class RerankResultDocument(ResponseModel):
    text: str


class RerankResult(ResponseModel):
    index: int
    document: RerankResultDocument | None = None  # left out when return_documents is false
    relevance_score: float


class RerankUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(ResponseModel):
    id: str = Field(default_factory=lambda: new_id("rerank"))
    model: str
    usage: RerankUsage
    results: list[RerankResult]
