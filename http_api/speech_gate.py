"""Whole-file uploads that hold no speech are answered without running Whisper.

Whisper makes text up for silence and noise ("you you you" for an hour of silent FLAC); the engine's
no-speech rule drops that text, but only after paying for every window. silero-vad over the file is
far cheaper, and stops at the first frame that sounds like speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from audio.constants import SAMPLE_RATE
from audio.vad import has_speech
from engine.interface import EngineClient
from engine.request import TranscriptionOutput, TranscriptionRequest, TranscriptionResult
from http_api.generation import closing


async def transcribe_speech(
    engine: EngineClient, request: TranscriptionRequest
) -> AsyncIterator[TranscriptionOutput]:
    """engine.transcribe(request), or at once an empty result when the VAD hears no speech at all."""
    heard = await asyncio.get_running_loop().run_in_executor(None, has_speech, request.audio)
    if not heard:
        duration = len(request.audio) / SAMPLE_RATE
        yield TranscriptionOutput("", TranscriptionResult("", request.language or "en", duration, [], 0))
        return
    async with closing(engine.transcribe(request)) as outputs:
        async for out in outputs:
            yield out
