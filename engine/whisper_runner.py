"""Batched Whisper encode/decode. CONTRACT ONLY until the Whisper helper fills it in.

The scheduler (engine/scheduler.py) calls, on the inference thread:
    batch = runner.start(jobs)        # log-mel + encoder + decoder prompt, all jobs batched
    while not batch.done:
        outs = runner.step(batch)     # one decoder step for every unfinished row
and may call start() again while other batches are mid-decode (each batch decodes independently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class WhisperJob:
    """One window of <= 30 s audio to decode."""

    audio: np.ndarray  # float32 mono 16 kHz, at most 30 s
    language: str | None = None  # None: "en" on .en models, detected on multilingual ones
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None  # previous text, fed as <|startofprev|> context
    temperature: float = 0.0
    encoder_context: Literal["full", "trimmed"] = "full"
    with_timestamps: bool = False
    seed: int | None = None


@dataclass
class WhisperSegment:
    start: float  # seconds within this window
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class WhisperRowOutput:
    """What one step produced for one job (one row of the batch)."""

    text: str  # the job's whole decoded text so far (the caller diffs successive values)
    finished: bool
    language: str = "en"
    num_tokens: int = 0  # generated tokens so far
    segments: list[WhisperSegment] = field(default_factory=list)  # set when finished
