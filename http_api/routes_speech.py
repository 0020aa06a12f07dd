"""POST /v1/audio/speech: text -> speech in the OpenAI shape, streamed as it is synthesized.

The input is split into sentences (engine/tts/segmenter.py) and every sentence goes to the engine at once,
so the TTS lane schedules them together with every other request's; the audio is sent in order, each
sentence as soon as it and those before it are spoken. stream_format "audio" sends the file's bytes
(chunked), "sse" sends them base64 in speech.audio.delta events, then speech.audio.done."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid

import numpy as np
from aiohttp import web

from engine.interface import EngineClient
from engine.tts.request import SpeechPriority, SpeechRequest
from engine.tts.segmenter import FIRST_CLAUSE_CHARS, split_sentences
from engine.tts.voices import resolve_voice
from http_api import sse
from http_api.app_keys import ENGINE_KEY
from http_api.errors import bad_request, engine_error, model_not_found, parse_model, read_json
from http_api.generation import closing
from http_api.protocol_openai.speech import (
    MAX_INPUT_CHARS,
    OPENAI_SPEECH_MODELS,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechCreateRequest,
    SpeechUsage,
)
from http_api.speech_encoding import CONTENT_TYPES, OUTPUT_RATE, SpeechEncoder, to_output_rate

log = logging.getLogger("rtserve.http")

FRAME_S = 0.02  # usage.output_tokens counts audio in 20 ms frames
MAX_PIECE_CHARS = 150  # about 10 s of audio, 1-2 s of CPU at most in one step


async def _speak(engine: EngineClient, request: SpeechRequest) -> tuple[bytes, int]:
    """One sentence's PCM16 and its sample rate."""
    chunks: list[bytes] = []
    rate = 0
    async with closing(engine.synthesize(request)) as stream:
        async for out in stream:
            chunks.append(out.pcm)
            rate = out.sample_rate
    return b"".join(chunks), rate


class SentenceSpeaker:
    """Every sentence sent to the engine at once, under one request_id (the lane speaks them in order and
    lets other requests take turns between them); their audio taken back in order."""

    def __init__(self, engine: EngineClient, sentences: list[str], voice: str, speed: float) -> None:
        request_id = uuid.uuid4().hex
        self._tasks = [
            asyncio.create_task(
                _speak(engine, SpeechRequest(s, voice, speed, SpeechPriority.HTTP, request_id))
            )
            for s in sentences
        ]
        self._next = 0

    async def next_samples(self) -> np.ndarray | None:
        """The next sentence's int16 samples at OUTPUT_RATE; None after the last."""
        if self._next == len(self._tasks):
            return None
        task = self._tasks[self._next]
        self._next += 1
        try:
            pcm, rate = await task
        except Exception as exc:
            raise engine_error(exc) from exc
        return to_output_rate(pcm, rate) if pcm else to_output_rate(b"", OUTPUT_RATE)

    def cancel(self) -> None:
        """Stops what is not spoken yet (closing each engine stream aborts it in the lane)."""
        for task in self._tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: a sentence that failed after the response ended logs nothing


def _check(engine: EngineClient, body: SpeechCreateRequest) -> tuple[str, list[str]]:
    """The served voice and the input's sentences, or a 4xx."""
    voices = engine.tts_voices
    if not voices:
        raise bad_request(
            "This server runs no speech synthesis model (--tts none)", "model", "model_not_found"
        )
    if body.model not in OPENAI_SPEECH_MODELS | set(voices) | {v.model for v in voices.values()}:
        raise model_not_found(body.model)
    voice = resolve_voice(body.voice_name, voices)  # InvalidParameter("voice") -> 400
    if len(body.input) > MAX_INPUT_CHARS:
        raise bad_request(
            f"'input' is {len(body.input)} characters long; the most is {MAX_INPUT_CHARS}",
            "input",
            "string_above_max_length",
        )
    # The first sentence cut early at a clause: audio starts sooner. Long sentences cut at clauses: one
    # piece is one engine step, and a live caption waits for the step it shares.
    sentences = split_sentences(body.input, max_chars=MAX_PIECE_CHARS, first_clause_chars=FIRST_CLAUSE_CHARS)
    if not sentences:
        raise bad_request("'input' has nothing to speak", "input", "empty_input")
    return voice, sentences


async def create_speech(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = parse_model(SpeechCreateRequest, await read_json(request))
    voice, sentences = _check(engine, body)
    speaker = SentenceSpeaker(engine, sentences, voice, body.speed)
    encoder = SpeechEncoder(body.response_format)
    try:
        first = await speaker.next_samples()  # a refused request is still a plain 4xx here
        if body.stream_format == "sse":
            return await _stream_sse(request, speaker, encoder, first, len(body.input))
        return await _stream_audio(request, speaker, encoder, first, CONTENT_TYPES[body.response_format])
    finally:
        speaker.cancel()
        encoder.close()


async def _stream_audio(
    request: web.Request,
    speaker: SentenceSpeaker,
    encoder: SpeechEncoder,
    samples: np.ndarray | None,
    content_type: str,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type, "X-Accel-Buffering": "no"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        while samples is not None:
            await response.write(encoder.encode(samples))
            samples = await speaker.next_samples()
        await response.write(encoder.finish())
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left: the finally in create_speech stops the rest
    except Exception:
        # The headers are out: the only way to say it failed is to cut the body short.
        log.exception("speech stream failed")
        if request.transport is not None:
            request.transport.close()
    return response


async def _stream_sse(
    request: web.Request,
    speaker: SentenceSpeaker,
    encoder: SpeechEncoder,
    samples: np.ndarray | None,
    input_chars: int,
) -> web.StreamResponse:
    response = await sse.open_stream(request)
    total_samples = 0
    async with sse.reporting_errors(response, "speech"):
        while samples is not None:
            total_samples += samples.size
            await _send_audio(response, encoder.encode(samples))
            samples = await speaker.next_samples()
        await _send_audio(response, encoder.finish())
        frames = round(total_samples / OUTPUT_RATE / FRAME_S)
        usage = SpeechUsage(input_tokens=input_chars, output_tokens=frames, total_tokens=input_chars + frames)
        await sse.send(response, SpeechAudioDone(usage=usage).model_dump())
    return response


async def _send_audio(response: web.StreamResponse, data: bytes) -> None:
    if data:
        delta = SpeechAudioDelta(audio=base64.b64encode(data).decode("ascii"))
        await sse.send(response, delta.model_dump())
