"""Live engine counters, read by /metrics and /health."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

RATE_WINDOW_S = 5.0  # generation_tokens_per_s averages over this many seconds


@dataclass
class EngineStats:
    # LLM
    llm_waiting: int = 0  # requests queued, not yet admitted (no slot or no KV blocks)
    llm_running: int = 0  # sequences in the running batch
    llm_last_batch_size: int = 0
    llm_max_batch_size: int = 0  # the largest decode batch seen since start
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    generation_tokens_per_s: float = 0.0  # over the last few seconds
    llm_requests_finished: int = 0
    llm_requests_aborted: int = 0
    vision_items_encoded: int = 0  # images/videos run through a VLM's vision tower
    vision_cache_hits: int = 0  # images/videos whose embeddings were reused (cached, or twice in one step)
    # Whisper
    asr_waiting: int = 0  # windows queued for encoding
    asr_running: int = 0  # windows mid-decode
    asr_last_batch_size: int = 0
    asr_max_batch_size: int = 0  # the most windows in one encoder or decoder batch
    asr_multi_request_batches: int = 0  # batches that mixed windows of 2+ requests/sessions
    asr_windows_total: int = 0
    asr_requests_finished: int = 0
    asr_draft_tokens: int = 0  # draft tokens verified (live turns' previous hypotheses)
    asr_draft_accepted: int = 0  # of those, kept: decoder steps saved
    # Speech synthesis
    tts_waiting: int = 0  # pieces of text queued
    tts_pieces_total: int = 0
    tts_audio_seconds_total: float = 0.0  # audio made
    tts_synthesis_seconds_total: float = 0.0  # inference-thread time spent making it
    # Steps
    steps_total: int = 0
    started_at: float = field(default_factory=time.time)

    _token_times: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    def count_generated(self, n: int) -> None:
        now = time.monotonic()
        self.generation_tokens_total += n
        self._token_times.append((now, n))
        while self._token_times and now - self._token_times[0][0] > RATE_WINDOW_S:
            self._token_times.popleft()

    def refresh_rate(self) -> None:
        now = time.monotonic()
        recent = sum(n for t, n in self._token_times if now - t <= RATE_WINDOW_S)
        self.generation_tokens_per_s = recent / RATE_WINDOW_S

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0
