"""POST /v1/audio/speech on the shared live server: every format decodes to speech our own Whisper
understands, the audio streams before synthesis ends, SSE events, and bad input gets a 400."""

from __future__ import annotations

import base64
import io
import json
import time

import av
import numpy as np
import pytest
import requests
import soundfile as sf

from audio.decode import resample
from tests.conftest import metric
from tests.speech import wer

TEXT = "The weather is sunny and warm today. Please bring a bottle of water to the park."
LONG_TEXT = (
    "Good morning, everyone. The train to the city leaves at nine. Please take your bags with you. "
    "The museum opens at ten, and lunch is at noon. We will walk along the river after lunch. "
    "The bus brings us back to the hotel in the evening."
)
RATE = 24000  # OpenAI's speech output rate, for every format


def decode(data: bytes, fmt: str) -> np.ndarray:
    """float32 mono at 16 kHz, read by soundfile (wav, pcm) or PyAV (FFmpeg; mp3, opus, aac, flac)."""
    if fmt == "pcm":
        return resample(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, RATE, 16000)
    if fmt == "wav":
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == RATE
        return resample(audio, rate, 16000)
    to_16k = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].rate in (RATE, 48000)  # opus decodes at 48 kHz
        frames = [out for frame in container.decode(audio=0) for out in to_16k.resample(frame)]
    frames += to_16k.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def transcribe(openai_client, audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV")
    result = openai_client.audio.transcriptions.create(
        model="whisper-base", file=("speech.wav", buffer.getvalue()), language="en"
    )
    return result.text


def speech_url(server) -> str:
    return f"{server.base_url}/v1/audio/speech"


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_each_format_is_speech_whisper_understands(openai_client, fmt):
    with openai_client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format=fmt
    ) as response:
        assert response.headers["content-type"].startswith("audio/")
        data = b"".join(response.iter_bytes())
    audio = decode(data, fmt)
    assert 3.0 < len(audio) / 16000 < 10.0
    text = transcribe(openai_client, audio)
    assert wer(TEXT, text) < 0.15, (fmt, text)


def test_audio_streams_before_the_whole_text_is_spoken(server, http):
    started = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    body = {"model": "tts-1", "voice": "joe", "input": LONG_TEXT, "response_format": "pcm"}
    with http.post(speech_url(server), json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200 and response.headers.get("transfer-encoding") == "chunked"
        for chunk in response.iter_content(chunk_size=None):
            arrivals.append((time.monotonic() - started, len(chunk)))
    first, total = arrivals[0][0], arrivals[-1][0]
    audio_s = sum(n for _, n in arrivals) / 2 / RATE
    assert audio_s > 10.0
    # The first sentence's audio arrives long before the last one is spoken.
    assert first < 0.4 * total, (first, total)
    assert len(arrivals) >= 4


def test_sse_stream_deltas_and_done_event(server, http, openai_client):
    body = {
        "model": "tts-1",
        "voice": {"id": "joe"},
        "input": TEXT,
        "response_format": "pcm",
        "stream_format": "sse",
    }
    with http.post(speech_url(server), json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    events = [json.loads(line[len("data: ") :]) for line in lines]
    deltas, done = events[:-1], events[-1]
    assert len(deltas) >= 2 and all(
        set(e) == {"type", "audio"} and e["type"] == "speech.audio.delta" for e in deltas
    )
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    seconds = len(pcm) / 2 / RATE
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] == len(TEXT) and usage["output_tokens"] == round(seconds / 0.02)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert wer(TEXT, transcribe(openai_client, decode(pcm, "pcm"))) < 0.15


def test_speed_changes_the_duration(server, http):
    spoken_before = metric(http.get(f"{server.base_url}/metrics").text, "rtserve_tts_audio_seconds_total")
    durations = []
    for speed in (0.5, 2.0):
        body = {"model": "tts-1", "voice": "joe", "input": "Hello there, how are you?", "response_format": "pcm",
                "speed": speed}  # fmt: skip
        response = http.post(speech_url(server), json=body, timeout=120)
        assert response.status_code == 200
        durations.append(len(response.content) / 2 / RATE)
    assert durations[0] > 2.5 * durations[1], durations
    spoken = (
        metric(http.get(f"{server.base_url}/metrics").text, "rtserve_tts_audio_seconds_total") - spoken_before
    )
    assert spoken >= 0.95 * sum(durations)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"voice": "nobody"}, "voice"),
        ({"voice": {"id": "voice_1234"}}, "voice"),
        ({"input": "word " * 1000}, "input"),  # 5000 characters: over OpenAI's 4096
        ({"input": "  ... "}, "input"),
        ({"response_format": "ogg"}, "response_format"),
        ({"stream_format": "chunks"}, "stream_format"),
        ({"speed": 4.5}, "speed"),
        ({"speed": 0.1}, "speed"),
        ({"temperature": 0.5}, "temperature"),
    ],
)
def test_bad_input_gets_a_400_naming_the_field(server, http, change, param):
    body = {"model": "tts-1", "voice": "joe", "input": "Hello there.", **change}
    response = http.post(speech_url(server), json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_an_unknown_model_is_a_404_and_the_server_still_speaks(server, http):
    body = {"model": "no-such-tts", "voice": "joe", "input": "Hello there."}
    response = http.post(speech_url(server), json=body, timeout=60)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    ok = {"model": "en_US-joe-medium", "voice": "joe", "input": "Still here.", "response_format": "pcm",
          "instructions": "Speak cheerfully."}  # fmt: skip
    response = http.post(speech_url(server), json=ok, timeout=60)
    assert response.status_code == 200 and len(response.content) / 2 / RATE > 0.5


def test_a_client_that_leaves_mid_stream_does_not_hurt_the_server(server, http):
    body = {"model": "tts-1", "voice": "joe", "input": LONG_TEXT * 3, "response_format": "mp3"}
    with requests.post(speech_url(server), json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        next(response.iter_content(chunk_size=1024))
    # The rest of that text is aborted in the lane: a new request is answered promptly.
    started = time.monotonic()
    ok = {"model": "tts-1", "voice": "joe", "input": "Next please.", "response_format": "wav"}
    response = http.post(speech_url(server), json=ok, timeout=60)
    assert response.status_code == 200 and decode(response.content, "wav").size > 8000
    assert time.monotonic() - started < 10
