"""The engine's generation defaults (`--generation-config`) where a request leaves a field unset.

A value the request gives always wins; a field it leaves out (or sends as null) takes the model's default,
and only without one the API's own (temperature 1, top_p 1, ...).
"""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from engine.interface import EngineClient
from engine.sampling import SamplingParams

# The sampling fields a default may fill, by SamplingParams' (and the request bodies') names.
DEFAULTED = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def given_fields(req: BaseModel) -> set[str]:
    """The fields a request body set to a value (not left out, not null)."""
    return {name for name in req.model_fields_set if getattr(req, name, None) is not None}


def with_defaults(params: SamplingParams, req: BaseModel, engine: EngineClient) -> SamplingParams:
    """`params` (built from `req`) with the engine's default for every DEFAULTED field `req` left unset."""
    given = given_fields(req)
    fill = {
        name: value
        for name, value in engine.generation_defaults.items()
        if name in DEFAULTED and name not in given
    }
    return dataclasses.replace(params, **fill) if fill else params  # type: ignore[arg-type]


def max_tokens_or_default(requested: int | None, engine: EngineClient, prompt_len: int) -> int | None:
    """A route whose unset max tokens means "the rest of the context" (chat, Responses): the model's
    max_new_tokens instead, when it has one and it fits; else what the request asked for."""
    default = engine.generation_defaults.get("max_tokens")
    room = engine.max_model_len - prompt_len
    if requested is not None or default is None or room < 1:
        return requested
    return min(int(default), room)
