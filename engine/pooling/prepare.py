"""A pooling request checked and tokenized once, when the lane accepts it: InvalidParameter names the field.

Texts are tokenized with the model's own tokenizer (special tokens as the model expects them); token ids
are taken as given. An input longer than the model's max length is cut only when truncate_prompt_tokens
asks for it; otherwise the request is refused with both lengths in the message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidParameter
from engine.llm.chat import encode_chat
from engine.pooling.request import MAX_POOLING_INPUTS, PoolingModelInfo, PoolingRequest, Prompt


@dataclass(frozen=True)
class Encoded:
    token_ids: list[int]
    type_ids: list[int] | None  # segment ids of a (text_1, text_2) pair; None: all zero


@dataclass(frozen=True)
class Prepared:
    """A request ready for the scheduler: what each forward row runs."""

    inputs: list[Encoded]  # what the model runs, one forward row each
    # score with an embedding model: result i is the cosine of rows pairs[i][0] and pairs[i][1]
    pairs: list[tuple[int, int]] | None = None

    @property
    def prompt_tokens(self) -> int:
        return sum(len(e.token_ids) for e in self.inputs)


@dataclass(frozen=True)
class PoolingJob:
    """A checked, tokenized request: what the lane's add() takes."""

    request: PoolingRequest
    model: PoolingModelInfo
    prepared: Prepared


def prepare(request: PoolingRequest, model: PoolingModelInfo, tokenizer: Any, vocab_size: int) -> Prepared:
    check_task(request, model)
    limit = token_limit(request, model)
    if request.task == "score":
        return _prepare_score(request, model, tokenizer, limit)
    if request.messages is not None:
        if request.inputs:
            raise InvalidParameter("messages", "give either input or messages, not both")
        if not model.chat_template:
            raise InvalidParameter("messages", f"the model {model.name!r} has no chat template")
        ids = encode_chat(tokenizer, request.messages, add_generation_prompt=request.add_generation_prompt)
        return Prepared([_fit(Encoded(ids, None), limit, model, request, "messages")])
    check_inputs(request.inputs, vocab_size)
    texts = [(i, p) for i, p in enumerate(request.inputs) if isinstance(p, str)]
    encoded = [Encoded([] if isinstance(p, str) else list(p), None) for p in request.inputs]
    tokenized = _encode(tokenizer, [text for _, text in texts], None, request, limit)
    for (i, _), enc in zip(texts, tokenized, strict=True):
        encoded[i] = enc
    names = ["input"] if len(encoded) == 1 else [f"input[{i}]" for i in range(len(encoded))]
    return Prepared([_fit(e, limit, model, request, name) for e, name in zip(encoded, names, strict=True)])


def check_task(request: PoolingRequest, model: PoolingModelInfo) -> None:
    if request.task == "embed" and model.kind != "embed":
        raise InvalidParameter(
            "model",
            f"the model {model.name!r} is a {model.task} model: it makes no embeddings",
            "invalid_model",
        )
    if request.task == "classify" and model.kind != "classify":
        raise InvalidParameter(
            "model", f"the model {model.name!r} is an embedding model: it cannot classify", "invalid_model"
        )
    if request.task == "score" and model.kind == "classify" and not model.cross_encoder:
        raise InvalidParameter(
            "model",
            f"the model {model.name!r} is a classifier with {model.dimensions} classes: scoring needs an "
            "embedding model or a cross-encoder (one output)",
            "invalid_model",
        )
    if request.dimensions is not None:
        if request.task != "embed":
            raise InvalidParameter("dimensions", "dimensions applies to embeddings only")
        if model.matryoshka is None:
            raise InvalidParameter(
                "dimensions",
                f"the model {model.name!r} does not support matryoshka representation; "
                "leave dimensions unset",
            )
        allowed = model.matryoshka or tuple(range(1, model.dimensions + 1))
        if request.dimensions not in allowed:
            raise InvalidParameter(
                "dimensions", f"dimensions must be one of {list(allowed)} for {model.name!r}"
            )


def token_limit(request: PoolingRequest, model: PoolingModelInfo) -> int | None:
    """Inputs are cut to this many tokens; None: an over-long input is an error."""
    k = request.truncate_prompt_tokens
    if k is None:
        return None
    if k == -1:
        return model.max_model_len
    if k < 1:
        raise InvalidParameter("truncate_prompt_tokens", "truncate_prompt_tokens must be -1 or at least 1")
    if k > model.max_model_len:
        raise InvalidParameter(
            "truncate_prompt_tokens",
            f"truncate_prompt_tokens ({k}) is greater than the model's maximum input length "
            f"({model.max_model_len} tokens)",
        )
    return k


def check_inputs(inputs: list[Prompt], vocab_size: int) -> None:
    if not inputs:
        raise InvalidParameter("input", "input must not be empty")
    if len(inputs) > MAX_POOLING_INPUTS:
        raise InvalidParameter(
            "input", f"at most {MAX_POOLING_INPUTS} inputs per request, got {len(inputs)}", "too_many_inputs"
        )
    single = len(inputs) == 1
    for i, prompt in enumerate(inputs):
        param = "input" if single else f"input[{i}]"
        if len(prompt) == 0:
            raise InvalidParameter(param, f"{param} is empty")
        if not isinstance(prompt, str) and any(not 0 <= t < vocab_size for t in prompt):
            raise InvalidParameter(param, f"{param} has token ids outside the vocabulary (size {vocab_size})")


def _fit(
    enc: Encoded, limit: int | None, model: PoolingModelInfo, req: PoolingRequest, param: str
) -> Encoded:
    """The input as it runs: as given, cut to `limit` tokens, or refused when too long."""
    n = len(enc.token_ids)
    if limit is not None and n > limit:
        keep = slice(n - limit, None) if req.truncation_side == "left" else slice(0, limit)
        return Encoded(enc.token_ids[keep], enc.type_ids[keep] if enc.type_ids else None)
    if n > model.max_model_len:
        raise InvalidParameter(
            param,
            f"{param} has {n} tokens, more than the model's maximum input length of {model.max_model_len} "
            "tokens; shorten it, or set truncate_prompt_tokens to cut it",
            "context_length_exceeded",
        )
    return enc


@contextmanager
def _truncating_from(tokenizer: Any, side: str) -> Iterator[None]:
    """The tokenizer cuts from `side` (it reads the side from itself, not from the call). A lane tokenizes
    on one thread of its own, so nothing else sees the change."""
    before = tokenizer.truncation_side
    tokenizer.truncation_side = side
    try:
        yield
    finally:
        tokenizer.truncation_side = before


def _encode(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, req: PoolingRequest, limit: int | None
) -> list[Encoded]:
    """Tokenize in one batch; the texts over `limit` again, cut by the tokenizer (it keeps the special
    tokens). Without a limit, a text too long stays too long, for _fit to refuse."""
    encoded = _tokenize(tokenizer, texts, pairs, req)
    over = [i for i, e in enumerate(encoded) if limit is not None and len(e.token_ids) > limit]
    if over:
        cut = _tokenize(
            tokenizer, [texts[i] for i in over], [pairs[i] for i in over] if pairs else None, req, limit
        )
        for i, enc in zip(over, cut, strict=True):
            encoded[i] = enc
    return encoded


def _tokenize(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, req: PoolingRequest, limit: int | None = None
) -> list[Encoded]:
    if not texts:
        return []
    kwargs: dict[str, Any] = {"add_special_tokens": req.add_special_tokens, "verbose": False}
    if limit is not None:
        kwargs.update(truncation=True, max_length=limit)
    with _truncating_from(tokenizer, req.truncation_side):
        enc = tokenizer(texts, pairs, **kwargs) if pairs is not None else tokenizer(texts, **kwargs)
    type_ids = enc.get("token_type_ids") if pairs is not None else None
    return [Encoded(ids, type_ids[i] if type_ids else None) for i, ids in enumerate(enc["input_ids"])]


def _prepare_score(
    request: PoolingRequest, model: PoolingModelInfo, tokenizer: Any, limit: int | None
) -> Prepared:
    pairs = request.pairs
    if not pairs:
        raise InvalidParameter("text_1", "there is nothing to score")
    if len(pairs) > MAX_POOLING_INPUTS:
        raise InvalidParameter(
            "text_2", f"at most {MAX_POOLING_INPUTS} pairs per request, got {len(pairs)}", "too_many_inputs"
        )
    if any(not a or not b for a, b in pairs):
        raise InvalidParameter("text_2", "texts to score must not be empty")
    if model.cross_encoder:
        firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
        encoded = _encode(tokenizer, firsts, seconds, request, limit)
        # A pair too long is named by its second text (the document, in a rerank).
        return Prepared([_fit(e, limit, model, request, "text_2") for e in encoded])
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))  # each text embedded once
    row = {text: i for i, text in enumerate(texts)}
    encoded = _encode(tokenizer, texts, None, request, limit)
    firsts = {a for a, _ in pairs}
    sides = ["text_1" if text in firsts else "text_2" for text in texts]
    fitted = [_fit(e, limit, model, request, side) for e, side in zip(encoded, sides, strict=True)]
    return Prepared(fitted, [(row[a], row[b]) for a, b in pairs])
