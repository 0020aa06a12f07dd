"""A transcription request checked once, when the ASR lane accepts it: InvalidParameter names the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.asr.language import check_language, check_task
from engine.errors import InvalidParameter
from engine.request import TranscriptionRequest

if TYPE_CHECKING:
    from engine.models.whisper_loader import WhisperBundle


@dataclass(frozen=True)
class ASRModelLimits:
    """What a served Whisper model accepts."""

    name: str
    multilingual: bool  # False for .en models: English only, no translation
    languages: frozenset[str]  # language codes the model has a token for (empty for .en models)
    text_vocab: int  # text token ids are below this (the id of <|endoftext|>)

    @classmethod
    def of(cls, bundle: WhisperBundle) -> ASRModelLimits:
        return cls(bundle.name, bundle.multilingual, frozenset(bundle.lang_to_id), text_vocab=bundle.eot_id)


def validate_request(request: TranscriptionRequest, model: ASRModelLimits) -> None:
    """Raise InvalidParameter if `model` cannot run the request; one bad request never fails a batch."""
    check_task(model.name, model.multilingual, request.task)
    check_language(model.name, model.multilingual, request.language, known=model.languages)
    if request.temperature < 0 or not math.isfinite(request.temperature):
        raise InvalidParameter("temperature", "temperature must be a finite number >= 0")
    if request.encoder_context not in ("full", "trimmed"):
        raise InvalidParameter("encoder_context", f"unknown encoder_context {request.encoder_context!r}")
    if not 0 < request.min_context_s <= 30:
        raise InvalidParameter("min_context_s", "min_context_s must be in (0, 30] seconds")
    if request.draft_tokens and not all(0 <= t < model.text_vocab for t in request.draft_tokens):
        raise InvalidParameter("draft_tokens", "draft_tokens must be text token ids")
