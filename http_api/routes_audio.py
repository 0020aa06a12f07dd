"""POST /v1/audio/transcriptions and /v1/audio/translations (multipart uploads, Whisper)."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Literal

import numpy as np
from aiohttp import BodyPartReader, web

from audio.decode import AudioDecodeError, AudioTooLongError, decode_audio_file
from engine.asr.language import check_language, check_task, normalize_language
from engine.interface import EngineClient
from engine.request import TranscriptionRequest, TranscriptionResult
from http_api import sse, transcript_formats
from http_api.app_keys import ENGINE_KEY, SETTINGS_KEY
from http_api.errors import APIError, bad_request, engine_error, model_not_found, parse_model
from http_api.generation import closing
from http_api.protocol_openai.audio import TranscriptionForm, TranscriptTextDelta, TranscriptTextDone
from http_api.speech_gate import transcribe_speech

log = logging.getLogger("rtserve.http")

Task = Literal["transcribe", "translate"]
MAX_FIELD_BYTES = 64 * 1024  # any non-file form field (the prompt is the longest)
LIST_FIELDS = ("timestamp_granularities", "include")


async def read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise APIError(
                f"{what} is larger than the limit of {limit} bytes",
                status=413,
                param=what,
                code="file_too_large",
            )
    return bytes(data)


async def read_form(request: web.Request, max_file_bytes: int) -> tuple[bytes, dict[str, object]]:
    """The uploaded file and the other fields; `name[]` fields (how the openai SDK sends lists) become lists."""
    if not request.content_type.startswith("multipart/form-data"):
        raise bad_request(
            f"Expected a multipart/form-data body with a 'file' part, got '{request.content_type}'",
            code="invalid_content_type",
        )
    if request.content_length is not None and request.content_length > max_file_bytes + MAX_FIELD_BYTES:
        raise APIError(
            f"The upload is larger than the limit of {max_file_bytes} bytes", status=413, param="file",
            code="file_too_large",
        )  # fmt: skip
    file_data: bytes | None = None
    fields: dict[str, object] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not supported")
            name = (part.name or "").removesuffix("[]")
            if name == "file":
                file_data = await read_part(part, max_file_bytes, "file")
            elif name in LIST_FIELDS:
                value = (await read_part(part, MAX_FIELD_BYTES, name)).decode("utf-8", "replace")
                fields.setdefault(name, []).append(value)  # type: ignore[union-attr]
            else:
                fields[name] = (await read_part(part, MAX_FIELD_BYTES, name)).decode("utf-8", "replace")
    except (ValueError, AssertionError) as exc:  # aiohttp's reader rejects malformed bodies this way
        raise bad_request(f"The multipart body could not be parsed: {exc}", code="invalid_multipart") from exc
    if file_data is None:
        raise bad_request(
            "Missing required parameter: 'file'", param="file", code="missing_required_parameter"
        )
    return file_data, fields


async def decode_upload(data: bytes, max_seconds: float) -> np.ndarray:
    """The upload as 16 kHz samples (off the event loop), or a 400 naming `file`."""
    decode = functools.partial(decode_audio_file, data, max_seconds)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, decode)
    except AudioDecodeError as exc:
        message = str(exc)
        code = "audio_too_long" if isinstance(exc, AudioTooLongError) else "invalid_audio"
        raise bad_request(message[:1].upper() + message[1:], param="file", code=code) from exc


def check_model(engine: EngineClient, form: TranscriptionForm, task: Task) -> str | None:
    """The language to ask for (None: detect), after checking the model can do what is asked."""
    info = engine.asr_models.get(form.model)
    if info is None:
        raise model_not_found(form.model)
    check_task(form.model, info.multilingual, task, param="model")
    if not info.multilingual:
        check_language(form.model, info.multilingual, form.language or None, param="language")
        return "en"
    return normalize_language(form.language, param="language") if form.language else None


async def handle(request: web.Request, task: Task) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    settings = request.app[SETTINGS_KEY]
    data, fields = await read_form(request, settings.max_audio_bytes)
    form = parse_model(TranscriptionForm, fields)
    form.check_supported()
    language = check_model(engine, form, task)
    audio = await decode_upload(data, settings.max_audio_seconds)
    job = TranscriptionRequest(
        audio=audio,
        model=form.model,
        language=language,
        task=task,
        prompt=form.prompt or None,
        temperature=form.temperature,
        with_timestamps=form.response_format in ("verbose_json", "srt", "vtt"),
    )
    if form.stream:
        return await stream_transcription(request, engine, job)

    result: TranscriptionResult | None = None
    try:
        async with closing(transcribe_speech(engine, job)) as outputs:
            async for out in outputs:
                result = out.result or result
    except Exception as exc:
        raise engine_error(exc) from exc
    if result is None:
        raise APIError("The transcription ended without a result", status=500, code="internal_error")
    fmt = form.response_format
    if fmt == "json":
        return web.json_response(transcript_formats.as_json(result))
    if fmt == "verbose_json":
        return web.json_response(transcript_formats.as_verbose_json(result, task, form.temperature))
    if fmt == "srt":
        return web.Response(text=transcript_formats.as_srt(result), content_type="text/plain")
    if fmt == "vtt":
        return web.Response(text=transcript_formats.as_vtt(result), content_type="text/vtt")
    return web.Response(text=result.text.strip() + "\n", content_type="text/plain")


async def stream_transcription(
    request: web.Request, engine: EngineClient, job: TranscriptionRequest
) -> web.StreamResponse:
    """`transcript.text.delta` events as windows decode, then one `transcript.text.done`."""
    response = await sse.open_stream(request)
    text = ""
    try:
        async with closing(transcribe_speech(engine, job)) as outputs:
            async for out in outputs:
                if out.text:
                    # Whisper text starts with a space; OpenAI's first delta does not.
                    delta = out.text.lstrip() if not text else out.text
                    text += out.text
                    if delta:
                        await sse.send(response, TranscriptTextDelta(delta=delta).model_dump())
                if out.result is not None:
                    done = TranscriptTextDone(text=out.result.text.strip())
                    await sse.send(response, done.model_dump())
    except ConnectionResetError:
        pass
    except Exception as exc:
        error = engine_error(exc)
        if not isinstance(error, APIError):
            log.exception("transcription stream failed")
            error = APIError("The server had an internal error", status=500, code="internal_error")
        await sse.send_error(response, error)
    return response


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await handle(request, "transcribe")


async def translations(request: web.Request) -> web.StreamResponse:
    return await handle(request, "translate")
