"""Speech synthesis requests and results: what front ends send the TTS lane and get back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import IntEnum


class SpeechPriority(IntEnum):
    REALTIME = 0  # a live conversation's reply: ahead of everything else the lane has
    HTTP = 1  # /v1/audio/speech


@dataclass(frozen=True)
class VoiceInfo:
    name: str  # what requests give as `voice`
    model: str  # the TTS model serving it
    sample_rate: int  # of the PCM the lane returns for it


@dataclass
class SpeechRequest:
    """One piece of text (a sentence or clause; callers split longer text) spoken in one voice."""

    text: str
    voice: str | None = None  # None: the default (first) voice
    speed: float = 1.0  # 0.25..4.0, as OpenAI's API
    priority: SpeechPriority = SpeechPriority.HTTP
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class SpeechOutput:
    pcm: bytes  # PCM16 little-endian mono at sample_rate (may be empty on the last output)
    sample_rate: int
    finished: bool = False
