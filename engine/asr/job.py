"""One Whisper window to decode, and what decoding it gives back: plain data, no torch.

The scheduler builds jobs and reads row outputs; the runner (engine/asr/runner.py) turns jobs into
tensors and tensors back into row outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from audio.constants import SAMPLE_RATE
from engine.request import TRIM_MIN_S, TranscriptionLogprob

TIME_PRECISION = 0.02  # seconds per timestamp token and per encoder position
TRIM_GRANULARITY_S = 1.0
# Trimmed context: encode the audio plus at least this much silence, and never less than
# TRIM_MIN_S in all (a job may ask for another minimum). Whisper only ever saw 30 s windows; with
# much less context, audio that holds several sentences and pauses gets repeated or hallucinated
# text after the speech ends (piper speech: WER 0.16-0.23 at 0-6 s minimum, 0.057 from 10 s on,
# 0.026 with the full 30 s). Single short utterances mostly do with less (16 of 0.5-7 s: WER 0.003
# from a 2 s minimum up), but not all: "the train to Boston" becomes "the train debossed" at 6 s.
TRIM_MARGIN_S = 1.0


@dataclass
class WhisperJob:
    """One window of <= 30 s audio to decode."""

    audio: np.ndarray  # float32 mono 16 kHz, at most 30 s
    language: str | None = None  # None: "en" on .en models, detected on multilingual ones
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None  # previous text, fed as <|startofprev|> context
    temperature: float = 0.0
    encoder_context: Literal["full", "trimmed"] = "full"
    min_context_s: float = TRIM_MIN_S  # with "trimmed": the least context encoded
    with_timestamps: bool = False
    seed: int | None = None
    # Text tokens the decode is expected to start with, e.g. the previous decode of the same growing
    # audio. Verified in the prefill pass: greedy decoding keeps the longest prefix it agrees with, so
    # the text is the same as without a draft and fewer decoder steps run. Ignored when sampling
    # (temperature > 0) or with timestamps.
    draft_tokens: list[int] | None = None


@dataclass
class WhisperSegment:
    start: float  # seconds within this window
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    compression_ratio: float = 0.0  # of `text`, as OpenAI Whisper computes it


@dataclass
class WhisperRowOutput:
    """What one step produced for one job (one row of the batch)."""

    text: str  # the job's whole decoded text so far (the caller diffs successive values)
    finished: bool
    language: str = "en"
    num_tokens: int = 0  # generated tokens so far
    segments: list[WhisperSegment] = field(default_factory=list)  # set when finished
    draft_tokens: int = 0  # draft tokens verified (its closing EOT included)
    draft_accepted: int = 0  # of those, kept: decoder steps saved
    # Whisper's confidence figures for the window: the mean log-probability of its chosen tokens (its
    # closing EOT included) and P(<|nospeech|>) after <|startoftranscript|>. Set when finished.
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    no_speech: bool = False  # judged silent (engine/asr/text.py is_silent): no text, no segments
    logprobs: list[TranscriptionLogprob] = field(default_factory=list)  # per text token; set when finished


def encoder_positions(job: WhisperJob, max_positions: int) -> int:
    """Encoder positions the job needs: all of them (1500), or its audio (rounded up) plus a margin."""
    if job.encoder_context == "full":
        return max_positions
    seconds = len(job.audio) / SAMPLE_RATE + TRIM_MARGIN_S
    seconds = max(job.min_context_s, math.ceil(seconds / TRIM_GRANULARITY_S) * TRIM_GRANULARITY_S)
    positions = int(round(seconds / TIME_PRECISION))
    return max(1, min(max_positions, positions))
