"""A session's settings, in no dialect's terms: what it transcribes, how, and how live speech is re-decoded.

Each dialect translates its own wire settings into a SessionConfig (OpenAI: realtime/openai_session.py;
vLLM's one setting, the model, in realtime/dialect_vllm.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from audio.vad import VadParams
from engine.asr.language import check_language
from engine.errors import InvalidParameter
from engine.interface import ASRModelInfo
from engine.request import TRIM_MIN_S

SessionMode = Literal["transcription", "conversation"]
InputEncoding = Literal["pcm16", "pcmu", "pcma"]

MIN_COMMIT_SECONDS = 0.1  # like OpenAI's input_audio_buffer_commit_empty


@dataclass
class StreamingSettings:
    """How live speech is re-decoded. Tunable per server (the bench changes them).

    policy "live" (the default) asks for the first preview after `first_partial_audio_s` of speech, then
    again once the last one is back and `min_partial_interval_s` (or, when the engine is busy and the
    last preview waited, `busy_interval_factor` times as long as it waited) of new audio has come, and
    emits words one hypothesis early when Whisper is sure of them (`confident_logprob`). "legacy" is the
    old policy: a preview every `partial_interval_s` from `min_partial_audio_s` on, and LocalAgreement-2
    alone decides what is emitted.
    """

    policy: Literal["live", "legacy"] = "live"
    partial_interval_s: float = 0.5  # legacy: re-decode the growing turn after this much new audio
    min_partial_audio_s: float = 1.0  # legacy: no partial decode of less audio than this
    first_partial_audio_s: float = 0.5  # live: the first preview of a turn
    # live: ...unless the session's previous turn had a preview take longer than this (the engine is
    # busy): then the first preview waits for `min_partial_audio_s`, as under the legacy policy. On a
    # saturated 2-core CPU (16 sessions) early first previews cost more finals latency than they gain.
    busy_preview_s: float = 0.5
    min_partial_interval_s: float = 0.2  # live: the least new audio between two previews
    # live: ...and at least this many times the time the turn's last preview spent waiting (its decode
    # time less the turn's fastest): under load it stretches the interval, so previews leave the engine
    # room for finals and other sessions; on an idle engine it is ~0. (At 4 and 8 sessions on the 2-core
    # CPU, 2.5 times the whole decode time halved word and final latency against back-to-back previews.)
    busy_interval_factor: float = 2.5
    # live: ...and at least this many times the last preview's whole decode time. When every session's
    # previews queue (a saturated engine), "waited" above is ~0 (the turn's fastest preview waited too);
    # this keeps the previews asked for within what the engine can decode, so finals are not starved.
    decode_interval_factor: float = 1.0
    # live: a word of a preview's hypothesis past the agreed prefix is emitted at once when every one of
    # its tokens has at least this log-probability, every word before it was emitted or is emitted now,
    # and it is not among the hypothesis's last `confident_hold_back` words (speech may cut them short).
    confident_logprob: float = -0.3
    # live: LocalAgreement compares a hypothesis with one made on at least this much less audio
    agreement_min_gap_s: float = 0.4
    confident_hold_back: int = 1
    max_window_s: float = 24.0  # past this the window slides (stable text is committed and dropped)
    prompt_chars: int = 400  # prior text fed to Whisper as its prompt
    # Least Whisper encoder context per decode, in seconds (the turn's audio plus 1 s of silence when
    # longer); the encoder's cost is proportional to it. Less than the default 10 s makes each decode
    # cheaper on a CPU, but costs accuracy on some sentences ("the train to Boston" -> "the train
    # debossed" at 6 s and below), and LocalAgreement cannot undo a misheard word two partials agreed
    # on, so both stay at the engine's default (TRIM_MIN_S, engine/request.py).
    min_encoder_context_s: float = TRIM_MIN_S
    partial_min_encoder_context_s: float = TRIM_MIN_S

    @classmethod
    def legacy(cls) -> StreamingSettings:
        """The policy before live captions (a benchmark's baseline)."""
        return cls(policy="legacy", partial_min_encoder_context_s=TRIM_MIN_S)


@dataclass
class SessionConfig:
    mode: SessionMode = "transcription"
    asr_model: str = ""
    language: str | None = None
    prompt: str | None = None  # user-given transcription prompt
    encoding: InputEncoding = "pcm16"
    input_rate: int = 24000
    vad: VadParams | None = field(default_factory=VadParams)  # None: the client commits turns
    create_response: bool = True
    interrupt_response: bool = True
    llm_model: str | None = None
    instructions: str = "You are a helpful voice assistant. Answer in one or two short sentences."
    max_output_tokens: int | None = None  # None: "inf" (bounded by the context length)
    # Spoken replies (realtime/speech_out.py): "audio" replies carry their transcript.
    output_modalities: tuple[str, ...] = ("text",)
    output_encoding: InputEncoding = "pcm16"  # pcm16 is 24 kHz; pcmu/pcma 8 kHz
    voice: str | None = None  # None: the engine's default voice
    speed: float = 1.0
    include_logprobs: bool = False  # include: ["item.input_audio_transcription.logprobs"]
    idle_timeout_ms: int | None = None  # server_vad: input_audio_buffer.timeout_triggered after this silence
    usage_tokens: bool = False  # transcription usage in the `tokens` form (else `duration`)


def resolve_asr_model(name: str | None, asr_models: Mapping[str, ASRModelInfo], param: str) -> str:
    """An ASR model name served by the engine; None (or OpenAI's `whisper-1`) picks the first one.

    Raises InvalidParameter(param, ..., code="model_not_found")."""
    if not asr_models:
        raise InvalidParameter(
            param, "this server has no speech recognition model loaded", code="model_not_found"
        )
    if name is None or name == "whisper-1":
        return next(iter(asr_models))
    if name not in asr_models:
        raise InvalidParameter(
            param,
            f"The model `{name}` does not exist. Available speech models: {', '.join(asr_models)}",
            code="model_not_found",
        )
    return name


def check_session_language(
    asr_models: Mapping[str, ASRModelInfo], model: str, language: str | None, param: str
) -> None:
    """Refuse a language the session's model cannot transcribe (raises InvalidParameter naming `param`)."""
    check_language(model, asr_models[model].multilingual, language, param)
