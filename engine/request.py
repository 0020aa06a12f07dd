"""What the API layers hand the engine, and what streams back to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import numpy as np

from engine.sampling import SamplingParams
from engine.vision.inputs import MultimodalInputs

FinishReason = Literal["stop", "length", "abort"]


class Priority(IntEnum):
    """Lower runs first: live sessions are never stuck behind HTTP batch work, and a turn's final
    transcript (or a spoken reply) never waits behind another session's preview re-decode."""

    REALTIME = 0
    PREVIEW = 1  # live partial-transcript re-decodes: useful, but the first thing to wait
    BATCH = 2


@dataclass
class GenerationRequest:
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: Priority = Priority.BATCH
    lora_name: str | None = None  # a served LoRA adapter (EngineClient.lora_adapters); None: the base model
    # Images and videos (a vision-language LLM only): prompt_token_ids hold their placeholder tokens
    multimodal: MultimodalInputs | None = None


@dataclass
class TopLogprob:
    token_id: int
    logprob: float


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)
    rank: int | None = None  # 1 for the most likely token; set for prompt logprobs


@dataclass
class GenerationOutput:
    """One streamed increment of a generation. The last one has finish_reason set."""

    token_ids: list[int]  # tokens new in this increment
    text: str  # text new in this increment (stop strings already cut)
    logprobs: list[TokenLogprob] | None
    finish_reason: FinishReason | None
    prompt_tokens: int
    completion_tokens: int  # cumulative
    matched_stop: int | str | None = None  # the stop token id or stop string that ended it
    # With params.prompt_logprobs, on the first increment only: one entry per prompt token (the first
    # is None: nothing precedes it), computed in the prefill that produced the first token.
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


# The least Whisper encoder context of a "trimmed" decode, in seconds (why: engine/asr/job.py).
TRIM_MIN_S = 10.0


@dataclass
class TranscriptionRequest:
    audio: np.ndarray  # float32 mono 16 kHz; any length (split into <= 30 s windows)
    model: str
    language: str | None = None  # None: English for .en models, detected for multilingual ones
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None  # previous text, for context
    temperature: float = 0.0
    priority: Priority = Priority.BATCH
    # "full" pads every window to Whisper's 30 s; "trimmed" encodes only the audio there is
    # (plus a margin), which is what makes re-decoding live speech cheap on a CPU.
    encoder_context: Literal["full", "trimmed"] = "full"
    min_context_s: float = TRIM_MIN_S  # with "trimmed": the least context encoded
    with_timestamps: bool = False
    # Text tokens the decode likely starts with (a live turn's previous hypothesis): verified in one
    # pass instead of decoded token by token. The result is the same; see WhisperJob.draft_tokens.
    draft_tokens: list[int] | None = None
    # A live turn's id (its previews share it): the ASR scheduler runs a turn's first preview ahead of
    # other turns' later ones and sheds previews fairly across turns. None for everything else.
    live_stream: str | None = None


@dataclass
class TranscriptSegment:
    id: int
    start: float  # seconds from the start of the request's audio
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    # OpenAI Whisper's figures for the window the segment was decoded in (verbose_json reports them):
    # the mean log-probability of its tokens and P(<|nospeech|>); and the segment text's zlib ratio.
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


@dataclass
class TranscriptionLogprob:
    """One decoded text token and its log-probability (OpenAI's transcription `logprobs` entries)."""

    token: str
    logprob: float
    bytes: list[int]  # the token's UTF-8 bytes (a token may hold part of a character)


@dataclass
class TranscriptionResult:
    text: str
    language: str
    duration: float  # seconds of audio
    segments: list[TranscriptSegment]
    tokens: int  # decoded tokens, for usage
    # Every text token of the transcript, in order, with its log-probability (greedy decoding's choice
    # under Whisper's decoding rules); timestamps and special tokens are left out. None when not decoded.
    logprobs: list[TranscriptionLogprob] | None = None


@dataclass
class TranscriptionOutput:
    """One streamed increment of a transcription. The last one has `result` set."""

    text: str  # text new in this increment; concatenated increments equal result.text
    result: TranscriptionResult | None = None
    # A PREVIEW request the ASR scheduler shed (finals first, or too much Whisper work queued): the
    # stream ends here with no result, and the session asks again when it has more audio.
    skipped: bool = False

    @property
    def finished(self) -> bool:
        return self.result is not None or self.skipped
