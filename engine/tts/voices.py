"""Voice names requests may give, and how they resolve to a served voice. Shared by every front end."""

from __future__ import annotations

from engine.errors import InvalidParameter
from engine.tts.request import VoiceInfo

# OpenAI's built-in voice names (openai/types/audio/speech_create_params.py). Clients written against
# OpenAI send them; they are served by the default voice, as other OpenAI-compatible servers do.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
        "fable",
        "onyx",
        "nova",
    }
)


def resolve_voice(name: str | None, voices: dict[str, VoiceInfo]) -> str:
    """The served voice for a requested name: itself, or the default for None and OpenAI's names.
    Raises InvalidParameter("voice") for any other name, or when no voice is served."""
    if not voices:
        raise InvalidParameter("voice", "this server runs no speech synthesis model", "model_not_found")
    if name is None or name.lower() in OPENAI_VOICES:
        return next(iter(voices))
    if name in voices:
        return name
    served = ", ".join(sorted(voices))
    raise InvalidParameter(
        "voice", f"the voice {name!r} is not served here; voices: {served} (or an OpenAI voice name)"
    )
