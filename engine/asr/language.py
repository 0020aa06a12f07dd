"""Whisper language names and codes: the one place that decides what a language string means."""

from __future__ import annotations

from collections.abc import Collection

from engine.errors import InvalidParameter


def normalize_language(code: str, param: str = "language") -> str:
    """An ISO 639-1 code ("en") for a code or an English name ("English"); InvalidParameter otherwise."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    lowered = code.strip().lower()
    if lowered in LANGUAGES:
        return lowered
    if lowered in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[lowered]
    raise InvalidParameter(param, f"unknown language {code!r}; use an ISO 639-1 code such as 'en' or 'fr'")


def check_language(
    model: str,
    multilingual: bool,
    language: str | None,
    param: str = "language",
    known: Collection[str] | None = None,
) -> None:
    """Refuse an unknown language, one an English-only model cannot transcribe, or one a multilingual
    model has no token for (when `known` lists the codes it has)."""
    if language is None:
        return
    code = normalize_language(language, param)
    if not multilingual and code != "en":
        raise InvalidParameter(param, f"{model} is English-only; language {language!r} is not supported")
    if multilingual and known is not None and code not in known:
        raise InvalidParameter(param, f"{model} does not know language {language!r}")


def check_task(model: str, multilingual: bool, task: str, param: str = "task") -> None:
    if task not in ("transcribe", "translate"):
        raise InvalidParameter(param, f"unknown task {task!r}; use 'transcribe' or 'translate'")
    if task == "translate" and not multilingual:
        raise InvalidParameter(
            param, f"{model} is English-only and cannot translate; use a multilingual model"
        )
