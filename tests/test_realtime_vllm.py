"""/v1/realtime in vLLM's dialect, in the order vLLM's docs give: session.created, session.update {model},
commit, appends, commit {final: true}, transcription.delta..., transcription.done. Plus the streaming logic."""

from __future__ import annotations

import asyncio
import json

import requests
import websockets

from clients.realtime_client import chunks, pcm16_base64
from engine.request import TranscriptionResult, TranscriptSegment
from realtime.session import StreamingSettings
from realtime.transcriber import EngineDecoder, LocalAgreement, TurnTranscriber
from tests.conftest import metric
from tests.speech import synthesize, wer

MODEL = "whisper-tiny.en"
SENTENCE = "The quick brown fox jumps over the lazy dog."
LONG_TEXT = (
    "The history of the town goes back many centuries. Farmers settled along the river and built small houses "
    "of wood and stone. Over time a market grew in the central square, and traders came from distant cities to "
    "sell cloth, salt and spices. In the spring the fields turned green and the children helped their parents "
    "plant wheat and barley. Every autumn there was a great festival with music, dancing and long tables full of "
    "bread and fruit. Today the old bridge still stands, and visitors walk across it to see the church and the "
    "museum. Many families have lived here for generations, and they tell stories about the floods, the fires "
    "and the good harvests."
)


async def recv_json(ws, timeout: float = 120.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def stream_utterance(ws, audio, pace_s: float = 0.02) -> tuple[list[str], dict]:
    """commit, appends (100 ms chunks, faster than real time), commit final; collect deltas until done."""
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))

    async def send() -> None:
        for chunk in chunks(audio, 16000, 100):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_base64(chunk)}))
            await asyncio.sleep(pace_s)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))

    sender = asyncio.create_task(send())
    deltas: list[str] = []
    while True:
        event = await recv_json(ws)
        assert event["type"] in ("transcription.delta", "transcription.done"), event
        if event["type"] == "transcription.done":
            break
        deltas.append(event["delta"])
    await sender
    return deltas, event


async def test_vllm_documented_sequence(server):
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        created = await recv_json(ws)
        assert created["type"] == "session.created"
        assert created["id"] and isinstance(created["created"], int)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        deltas, done = await stream_utterance(ws, synthesize(SENTENCE))
    assert done["text"] == "".join(deltas)
    assert wer(SENTENCE, done["text"]) < 0.2, done["text"]
    usage = done["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_vllm_next_utterance_on_same_session(server):
    second = "I would like a cup of coffee please."
    async with websockets.connect(f"{server.ws_url}/v1/realtime") as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        _, first_done = await stream_utterance(ws, synthesize(SENTENCE))
        deltas, second_done = await stream_utterance(ws, synthesize(second))
    assert wer(SENTENCE, first_done["text"]) < 0.2
    assert second_done["text"] == "".join(deltas)
    assert wer(second, second_done["text"]) < 0.2, second_done["text"]


async def test_vllm_long_continuous_speech_slides_the_window(server):
    """Over 30 s without a pause: stable text is committed and the window slides; nothing is lost."""
    audio = synthesize(LONG_TEXT)
    assert len(audio) / 16000 > 30
    before = requests.get(f"{server.base_url}/metrics", timeout=10).text
    async with websockets.connect(f"{server.ws_url}/v1/realtime", max_size=None) as ws:
        await recv_json(ws)
        await ws.send(json.dumps({"type": "session.update", "model": MODEL}))
        deltas, done = await stream_utterance(ws, audio, pace_s=0.03)
    assert done["text"] == "".join(deltas)
    assert len(deltas) > 3  # partial text arrived while the audio was streaming
    assert wer(LONG_TEXT, done["text"]) < 0.15, done["text"]
    # Each re-decode of the growing window starts from the previous hypothesis, and keeps most of it.
    after = requests.get(f"{server.base_url}/metrics", timeout=10).text
    drafted, kept = (
        metric(after, name) - metric(before, name)
        for name in ("rtserve_asr_draft_tokens_total", "rtserve_asr_draft_accepted_total")
    )
    assert drafted > 0 and kept > drafted / 2, (kept, drafted)


# ---- streaming logic, in process ----


def test_local_agreement_emits_only_what_two_hypotheses_share():
    la = LocalAgreement()
    assert la.update("the quick".split()) == []
    assert la.update("the quick brown".split()) == ["the", "quick"]
    assert la.update("the quick brown fox".split()) == ["brown"]
    assert la.update("the quack brown fox jumps".split()) == []  # disagreement inside committed text
    assert la.update("the quick brown fox jumps".split()) == []  # agrees with the previous hypothesis on 2
    assert la.update("the quick brown fox jumps over".split()) == ["fox", "jumps"]
    assert la.rest("the quick brown fox jumps over the dog".split()) == ["over", "the", "dog"]


def test_local_agreement_rest_aligns_a_reworded_prefix():
    la = LocalAgreement()
    la.committed = "hello there my friend".split()
    # The final decode merged two committed words; the rest starts after "friend".
    assert la.rest("hello there, my friend how are you".split()) == ["how", "are", "you"]
    assert la.rest("hi there my friend how are you".split()) == ["how", "are", "you"]


def scripted_tokens(text: str) -> list[int]:
    return [sum(map(ord, word)) for word in text.split()]


class ScriptedDecoder:
    """Returns successive scripted hypotheses, recording the prompts it got."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[tuple[int, str | None, bool]] = []
        self.drafts: list[list[int] | None] = []

    async def __call__(self, audio, prompt, with_timestamps, preview, draft) -> TranscriptionResult:
        self.calls.append((len(audio), prompt, with_timestamps))
        self.drafts.append(draft)
        text = self.texts[min(len(self.calls) - 1, len(self.texts) - 1)]
        seg = TranscriptSegment(0, 0.0, len(audio) / 16000, text, scripted_tokens(text))
        return TranscriptionResult(text, "en", len(audio) / 16000, [seg], len(text.split()))


async def test_partials_and_finals_use_their_own_encoder_context():
    import numpy as np

    from engine.request import Priority, TranscriptionOutput, TranscriptionRequest

    seen: list[TranscriptionRequest] = []

    class RecordingEngine:
        async def transcribe(self, request: TranscriptionRequest):
            seen.append(request)
            yield TranscriptionOutput("hi", TranscriptionResult("hi", "en", 1.0, [], 1))

    settings = StreamingSettings(min_encoder_context_s=8.0, partial_min_encoder_context_s=4.0)
    decode = EngineDecoder(RecordingEngine(), MODEL, None, settings)  # type: ignore[arg-type]
    audio = np.zeros(16000, dtype=np.float32)
    await decode(audio, None, False, True, None)
    await decode(audio, None, False, False, [11, 12])
    assert [r.priority for r in seen] == [Priority.PREVIEW, Priority.REALTIME]
    assert all(r.encoder_context == "trimmed" for r in seen)
    assert [r.min_context_s for r in seen] == [4.0, 8.0]
    assert [r.draft_tokens for r in seen] == [None, [11, 12]]


async def test_server_declines_websocket_compression(server):
    # Base64 PCM barely deflates; inflating every frame would cost the event loop for nothing.
    async with websockets.connect(f"{server.ws_url}/v1/realtime", compression="deflate") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_turn_deltas_concatenate_to_the_final_transcript():
    import numpy as np

    decoder = ScriptedDecoder(
        ["one two", "one two three", "one too three four", "one two three four five six"]
    )
    turn = TurnTranscriber(decoder, StreamingSettings.legacy(), context="earlier words")
    deltas: list[str] = []
    for _ in range(3):
        turn.append(np.zeros(16000, dtype=np.float32))
        deltas.append((await turn.partial()).delta)
    final = await turn.final()
    deltas.append(final.delta)
    assert deltas == ["", "one two", "", " three four five six"]
    assert "".join(deltas) == final.transcript == "one two three four five six"
    assert all(prompt == "earlier words" for _, prompt, _ in decoder.calls)
    # Each decode of the growing turn is drafted with the one before it.
    assert decoder.drafts == [None] + [scripted_tokens(text) for text in decoder.texts[:3]]


async def test_live_policy_never_agrees_on_a_hypothesis_last_word():
    """Previews a moment apart can both end on a word cut short ("quit" for "quick"): under the live
    policy a word that ended either hypothesis is not emitted on their agreement."""
    import numpy as np

    decoder = ScriptedDecoder(["the quit", "the quit", "the quick brown", "the quick brown fox"])
    turn = TurnTranscriber(decoder, StreamingSettings(), context="")
    deltas: list[str] = []
    for _ in range(3):
        turn.append(np.zeros(16000, dtype=np.float32))
        deltas.append((await turn.partial()).delta)
    final = await turn.final()
    deltas.append(final.delta)
    assert deltas == ["", "the", "", " quick brown fox"]
    assert final.transcript == "the quick brown fox"


async def test_a_shed_preview_produces_nothing_and_the_next_append_asks_again():
    """The ASR scheduler may end a preview with `skipped`: no delta, and the turn asks again right away."""
    import numpy as np

    from engine.interface import ASRModelInfo
    from engine.request import Priority, TranscriptionOutput, TranscriptionRequest
    from realtime.audio_input import AudioInput
    from realtime.session import SessionConfig

    class SheddingEngine:
        asr_models = {MODEL: ASRModelInfo(MODEL, False)}

        def __init__(self, shed: int) -> None:
            self.shed = shed
            self.previews = 0

        async def transcribe(self, request: TranscriptionRequest):
            if request.priority == Priority.PREVIEW:
                self.previews += 1
                if self.previews <= self.shed:
                    yield TranscriptionOutput("", skipped=True)
                    return
            seg = TranscriptSegment(0, 0.0, 1.0, "hello world", scripted_tokens("hello world"))
            yield TranscriptionOutput("hello world", TranscriptionResult("hello world", "en", 1.0, [seg], 2))

    class Listener:
        def __init__(self) -> None:
            self.deltas: list[str] = []
            self.transcripts: list[str] = []

        def speech_started(self, item_id: str, audio_start_ms: int) -> None: ...
        def speech_stopped(self, item_id: str, audio_end_ms: int) -> None: ...
        def committed(self, item_id: str) -> None: ...

        def delta(self, item_id: str, text: str) -> None:
            self.deltas.append(text)

        def transcribed(self, item_id: str, transcript: str, turn: TurnTranscriber) -> None:
            self.transcripts.append(transcript)

        def transcription_failed(self, item_id: str, error: BaseException) -> None:
            raise AssertionError(error)

    engine, listener = SheddingEngine(shed=2), Listener()
    config = SessionConfig(asr_model=MODEL, encoding="pcm16", input_rate=16000, vad=None)
    # The legacy preview policy: a preview every 0.5 s from 1.0 s on (what the timeline below counts).
    settings = StreamingSettings.legacy()
    audio = AudioInput(config, "stream", listener, engine, settings)  # type: ignore[arg-type]
    audio.start_stream()
    previews_after_append = []
    for _ in range(13):  # 100 ms appends: a preview is first due at 1.0 s
        audio.append(np.zeros(1600, dtype=np.float32))
        await asyncio.sleep(0.01)  # the preview (if one was asked for) runs and ends
        previews_after_append.append(engine.previews)
    # Shed at 1.0 s and 1.1 s, asked again on each next append; decoded at 1.2 s, next due at 1.7 s.
    assert previews_after_append == [0] * 9 + [1, 2, 3, 3]
    assert audio.finish_stream() is None
    await audio.wait_transcribed()
    assert listener.transcripts == ["hello world"]
    assert "".join(listener.deltas) == "hello world"
    await audio.close()


async def test_engine_decoder_reads_a_shed_preview_as_no_result():
    import numpy as np

    from engine.request import TranscriptionOutput

    class SheddingEngine:
        async def transcribe(self, request):
            yield TranscriptionOutput("", skipped=True)

    decode = EngineDecoder(SheddingEngine(), MODEL, None, StreamingSettings())  # type: ignore[arg-type]
    assert await decode(np.zeros(16000, dtype=np.float32), None, False, True, None) is None
