"""One response's output item as it streams: text (response.output_text.*) or speech with its transcript
(response.output_audio.* and response.output_audio_transcript.*), then the events that close it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from engine.interface import EngineClient
from engine.request import GenerationRequest, Priority
from engine.sampling import SamplingParams
from realtime import protocol_openai as oa
from realtime.openai_session import output_format_object
from realtime.outbox import Outbox
from realtime.speech_out import SpeechOut, SpokenAudio, audio_tokens

Role = Literal["user", "assistant", "system"]


@dataclass
class ResponseOptions:
    instructions: str
    max_output_tokens: int | None
    metadata: dict[str, str] | None = None
    modalities: tuple[str, ...] = ("text",)
    voice: str | None = None
    speed: float = 1.0
    encoding: str = "pcm16"  # pcm16 (24 kHz), pcmu, pcma

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities

    def audio_object(self) -> dict[str, Any] | None:
        """The response object's `audio` (RealtimeResponse.audio), for audio replies."""
        if not self.audio:
            return None
        return {"output": {"format": output_format_object(self.encoding), "voice": self.voice}}


@dataclass
class Item:
    id: str
    role: Role
    text: str | None  # None while a user turn is still being transcribed
    audio: bool = False
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    spoken: SpokenAudio | None = None  # an assistant item's reply audio, as sent
    truncated: bool = False  # conversation.item.truncate cut it to what was heard

    def content_part(self) -> oa.ContentPart:
        if self.role == "assistant":
            if self.spoken is not None:
                return oa.ContentPart(type="output_audio", transcript=self.text or "")
            return oa.ContentPart(type="output_text", text=self.text or "")
        if self.audio:
            return oa.ContentPart(type="input_audio", transcript=self.text)
        return oa.ContentPart(type="input_text", text=self.text or "")

    def to_event_item(self) -> oa.MessageItem:
        return oa.MessageItem(id=self.id, role=self.role, status=self.status, content=[self.content_part()])


class ReplyStream:
    """Streams one response into `item` and closes it with the events its modality needs."""

    def __init__(
        self, engine: EngineClient, outbox: Outbox, resp_id: str, item: Item, options: ResponseOptions
    ) -> None:
        self.engine, self.outbox, self.resp_id, self.item = engine, outbox, resp_id, item
        self.text = ""
        self.speech: SpeechOut | None = None
        if options.audio:
            self.speech = SpeechOut(
                engine, options.voice, options.speed, options.encoding, self._audio_delta, item.id
            )
            item.spoken = self.speech.audio
        part = item.content_part()
        outbox.send(oa.ContentPartAddedEvent(response_id=resp_id, item_id=item.id, part=part))

    async def run(self, ids: list[int], max_tokens: int, usage: oa.ResponseUsage) -> bool:
        """Generate (and speak) the reply; True when it stopped at max_tokens."""
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        request = GenerationRequest(prompt_token_ids=ids, params=params, priority=Priority.REALTIME)
        truncated = False
        async for out in self.engine.generate(request):
            if out.text:
                self._text_delta(out.text)
            usage.output_token_details.text_tokens = out.completion_tokens
            truncated = out.finish_reason == "length"
        if self.speech is not None:
            self.speech.finish()
            await self.speech.drained()
        return truncated

    def _text_delta(self, delta: str) -> None:
        self.text += delta
        if not self.item.truncated:
            self.item.text = self.text
        ids = {"response_id": self.resp_id, "item_id": self.item.id}
        if self.speech is None:
            self.outbox.send(oa.OutputTextDeltaEvent(**ids, delta=delta))
            return
        self.outbox.send(oa.OutputAudioTranscriptDeltaEvent(**ids, delta=delta))
        self.speech.feed(delta)

    def _audio_delta(self, b64: str) -> None:
        self.outbox.send(oa.OutputAudioDeltaEvent(response_id=self.resp_id, item_id=self.item.id, delta=b64))

    def stop(self) -> None:
        """Barge-in or cancel: synthesis stops with the response (the LLM stops with its task)."""
        if self.speech is not None:
            self.speech.abort()

    def close(self, usage: oa.ResponseUsage) -> None:
        """The closing events of the item's content; the item keeps the text (unless truncated)."""
        item = self.item
        if not item.truncated:
            item.text = self.text
        ids = {"response_id": self.resp_id, "item_id": item.id}
        if self.speech is None:
            self.outbox.send(oa.OutputTextDoneEvent(**ids, text=self.text))
        else:
            self.outbox.send(oa.OutputAudioDoneEvent(**ids))
            self.outbox.send(oa.OutputAudioTranscriptDoneEvent(**ids, transcript=self.text))
            spoken = self.speech.audio
            usage.output_token_details.audio_tokens = audio_tokens(spoken.samples, spoken.rate)
        self.outbox.send(oa.ContentPartDoneEvent(**ids, part=item.content_part()))
