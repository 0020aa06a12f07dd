"""A finished transcription in the shapes /v1/audio/* can return: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

from engine.asr.text import compression_ratio
from engine.request import TranscriptionResult
from http_api.protocol_openai.audio import (
    DurationUsage,
    TranscriptionJSON,
    TranscriptionVerboseJSON,
    VerboseSegment,
)

WHISPER_FRAMES_PER_SECOND = 100  # `seek` is in mel frames, as in openai-whisper


def segments_of(result: TranscriptionResult) -> list[tuple[float, float, str]]:
    """(start, end, text) per segment; one spanning the audio if the engine gave none."""
    if result.segments:
        return [(s.start, s.end, s.text.strip()) for s in result.segments]
    return [(0.0, result.duration, result.text.strip())] if result.text.strip() else []


def as_json(result: TranscriptionResult) -> dict:
    return TranscriptionJSON(
        text=result.text.strip(), usage=DurationUsage(seconds=result.duration)
    ).model_dump()


def as_verbose_json(result: TranscriptionResult, task: str, temperature: float) -> dict:
    segments = [
        VerboseSegment(
            id=s.id,
            seek=int(s.start * WHISPER_FRAMES_PER_SECOND),
            start=round(s.start, 3),
            end=round(s.end, 3),
            text=s.text,
            tokens=list(s.tokens),
            temperature=temperature,
            avg_logprob=s.avg_logprob,
            compression_ratio=round(
                s.compression_ratio if s.compression_ratio is not None else compression_ratio(s.text), 4
            ),
            no_speech_prob=s.no_speech_prob,
        )
        for s in result.segments
    ]
    body = TranscriptionVerboseJSON(
        task=task,  # type: ignore[arg-type]
        language=result.language,  # the ISO code ("en"), not the name
        duration=round(result.duration, 3),
        text=result.text.strip(),
        segments=segments,
        usage=DurationUsage(seconds=result.duration),
    )
    return body.model_dump()


def _timestamp(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def as_srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(segments_of(result), start=1)
    ]
    return "\n".join(blocks) + "\n" if blocks else ""


def as_vtt(result: TranscriptionResult) -> str:
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n"
        for start, end, text in segments_of(result)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
