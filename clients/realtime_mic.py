"""`rtserve realtime --mic`: the microphone streamed to /v1/realtime, text (and spoken replies) back."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np

from clients.realtime_client import (
    OPENAI_RATE,
    REPLY_TEXT_DELTAS,
    Printer,
    _connect,
    openai_conversation_session,
    openai_transcription_session,
    pcm16_base64,
)


async def run_mic(
    url: str,
    api_key: str | None,
    conversation: bool,
    model: str | None,
    printer: Printer,
    reply_audio: bytearray | None = None,
) -> None:
    try:
        import sounddevice  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:
        raise SystemExit(
            f"--mic needs the `sounddevice` package and a working audio device ({exc})"
        ) from None
    queue: asyncio.Queue[np.ndarray] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def callback(indata, frames, time_info, status) -> None:  # audio thread
        loop.call_soon_threadsafe(queue.put_nowait, indata[:, 0].copy())

    query = "" if conversation else "?intent=transcription"
    session = (
        openai_conversation_session(audio_out=reply_audio is not None)
        if conversation
        else openai_transcription_session(model)
    )
    async with await _connect(url, api_key, query) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session}))

        async def send() -> None:
            while True:
                await ws.send(
                    json.dumps(
                        {"type": "input_audio_buffer.append", "audio": pcm16_base64(await queue.get())}
                    )
                )

        with sounddevice.InputStream(
            samplerate=OPENAI_RATE, channels=1, dtype="float32", blocksize=2400, callback=callback
        ):
            printer.info("listening; Ctrl-C to stop")
            sender = asyncio.create_task(send())
            try:
                async for message in ws:
                    event = json.loads(message)
                    kind = event["type"]
                    if kind.endswith("input_audio_transcription.delta") or kind in REPLY_TEXT_DELTAS:
                        printer.delta(event["delta"])
                    elif kind == "response.output_audio.delta" and reply_audio is not None:
                        reply_audio.extend(base64.b64decode(event["delta"]))
                    elif kind.endswith("input_audio_transcription.completed"):
                        printer.final("you" if conversation else "final", event["transcript"])
                    elif kind == "response.done":
                        printer.final("assistant", "")
                    elif kind == "error":
                        printer.info(f"error: {event['error']}")
            finally:
                sender.cancel()
