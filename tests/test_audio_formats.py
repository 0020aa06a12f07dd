"""Every upload format OpenAI's transcription API takes: piper speech encoded with PyAV at test time into
mp4, m4a, mpeg, mpga and webm (opus, written the way a browser's MediaRecorder streams it), decoded by the
server and transcribed; plus the duration limit and damaged files."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import pytest

from audio.decode import AudioDecodeError, AudioTooLongError, decode_audio_file, resample
from tests.speech import synthesize, wer

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back into the quiet forest."
MODEL = "whisper-tiny.en"


class Stream:
    """A sink that cannot seek, as a browser's MediaRecorder output is: the muxer can go back to write
    neither a duration nor an index, so the server learns the length only by decoding."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True)
class Container:
    extension: str
    muxer: str
    codec: str
    rate: int
    seekable: bool = True


CONTAINERS = {
    "mp4": Container("mp4", "mp4", "aac", 16000),
    "m4a": Container("m4a", "ipod", "aac", 44100),
    "mpeg": Container("mpeg", "mpeg", "mp2", 48000),  # an MPEG program stream with MPEG-1 audio
    "mpga": Container("mpga", "mp3", "libmp3lame", 24000),
    "mp3 as mpeg": Container("mpeg", "mp3", "libmp3lame", 22050),  # audio/mpeg is also just MP3
    "webm": Container("webm", "webm", "libopus", 48000, seekable=False),
}


def encode(speech: np.ndarray, container: Container) -> bytes:
    """16 kHz float speech as a mono file in `container`, encoded by FFmpeg through PyAV."""
    audio = resample(speech, 16000, container.rate)
    sink: io.BytesIO | Stream = io.BytesIO() if container.seekable else Stream()
    with av.open(sink, mode="w", format=container.muxer) as out:
        stream = out.add_stream(container.codec, rate=container.rate, layout="mono")
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = container.rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return sink.getvalue()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return synthesize(TEXT)


@pytest.fixture(scope="module")
def files(speech: np.ndarray) -> dict[str, bytes]:
    return {name: encode(speech, container) for name, container in CONTAINERS.items()}


@pytest.mark.parametrize("name", CONTAINERS)
def test_transcribes_every_container(openai_client, files, speech, name):
    container = CONTAINERS[name]
    data = files[name]
    assert not data.startswith((b"RIFF", b"fLaC", b"OggS"))  # not something libsndfile already read
    result = openai_client.audio.transcriptions.create(
        model=MODEL, file=(f"speech.{container.extension}", data), response_format="verbose_json"
    )
    assert wer(TEXT, result.text) < 0.2, result.text
    assert abs(result.duration - len(speech) / 16000) < 0.15  # codec padding, at most a few frames


def test_decoded_audio_matches_the_source(files, speech):
    for name in ("webm", "mpga"):
        decoded = decode_audio_file(files[name])
        assert abs(len(decoded) - len(speech)) < 0.02 * 16000, name
        n = min(len(decoded), len(speech))
        correlation = np.corrcoef(decoded[:n], speech[:n])[0, 1]
        assert correlation > 0.9, (name, correlation)


def test_the_duration_limit_holds_for_every_container(files):
    for name, data in files.items():
        with pytest.raises(AudioTooLongError) as caught:
            decode_audio_file(data, max_seconds=1.0)
        if CONTAINERS[name].seekable:
            assert caught.value.seconds is not None and caught.value.seconds > 4, name  # the header says so
    with pytest.raises(AudioTooLongError) as caught:
        decode_audio_file(files["webm"], max_seconds=1.0)
    assert caught.value.seconds is None  # a MediaRecorder stream declares none: decoding stopped at 1 s


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_a_truncated_m4a_is_refused_clearly(files, cut):
    data = files["m4a"]
    with pytest.raises(AudioDecodeError, match="truncated or damaged"):
        decode_audio_file(data[: int(len(data) * cut)])


def test_a_truncated_m4a_upload_is_a_400(server, http, files):
    data = files["m4a"][: len(files["m4a"]) // 2]
    response = http.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("speech.m4a", data, "audio/mp4")},
        data={"model": MODEL},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "file" and error["code"] == "invalid_audio"
    assert "mp4/m4a" in error["message"] and "truncated" in error["message"]
    assert http.get(f"{server.base_url}/health").status_code == 200


def test_a_container_without_audio_is_refused():
    sink = io.BytesIO()
    with av.open(sink, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height = 32, 32
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(AudioDecodeError, match="no audio track"):
        decode_audio_file(sink.getvalue())
