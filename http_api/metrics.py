"""EngineStats as Prometheus text exposition (version 0.0.4)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.stats import EngineStats

PREFIX = "rtserve_"
CONTENT_TYPE = "text/plain"  # aiohttp adds the charset; Prometheus accepts plain text 0.0.4


@dataclass(frozen=True)
class Gauge:
    """A gauge the app that hosts the HTTP API adds to /metrics (the open realtime sessions), read at each
    scrape: the HTTP API shows it without knowing what it counts."""

    name: str  # without the rtserve_ prefix
    help: str
    read: Callable[[], float]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # gauge | counter
    help: str
    stat: str  # EngineStats attribute (or property)


METRICS: tuple[Metric, ...] = (
    Metric("llm_requests_waiting", "gauge", "LLM requests queued, not yet admitted", "llm_waiting"),
    Metric("llm_requests_running", "gauge", "LLM sequences in the running batch", "llm_running"),
    Metric("llm_last_batch_size", "gauge", "Sequences in the last LLM step", "llm_last_batch_size"),
    Metric("llm_max_batch_size", "gauge", "Largest LLM decode batch since start", "llm_max_batch_size"),
    Metric("kv_cache_blocks_total", "gauge", "KV cache blocks", "kv_blocks_total"),
    Metric("kv_cache_blocks_used", "gauge", "KV cache blocks in use", "kv_blocks_used"),
    Metric("kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use", "kv_usage"),
    Metric("prompt_tokens_total", "counter", "Prompt tokens prefilled", "prompt_tokens_total"),
    Metric("generation_tokens_total", "counter", "Tokens generated", "generation_tokens_total"),
    Metric("generation_tokens_per_second", "gauge", "Generated tokens/s over the last seconds", "generation_tokens_per_s"),
    Metric("llm_requests_finished_total", "counter", "LLM requests finished (stop or length)", "llm_requests_finished"),
    Metric("llm_requests_aborted_total", "counter", "LLM requests aborted (client gone, shutdown)", "llm_requests_aborted"),
    Metric("vision_items_encoded_total", "counter", "Images and videos encoded by the vision tower", "vision_items_encoded"),
    Metric("vision_cache_hits_total", "counter", "Images and videos whose cached embeddings were reused", "vision_cache_hits"),
    Metric("asr_windows_waiting", "gauge", "Whisper windows queued for encoding", "asr_waiting"),
    Metric("asr_windows_running", "gauge", "Whisper windows mid-decode", "asr_running"),
    Metric("asr_last_batch_size", "gauge", "Whisper windows in the last batch", "asr_last_batch_size"),
    Metric("asr_max_batch_size", "gauge", "Most Whisper windows in one batch since start", "asr_max_batch_size"),
    Metric("asr_multi_request_batches_total", "counter", "Whisper batches mixing 2+ requests", "asr_multi_request_batches"),
    Metric("asr_windows_total", "counter", "Whisper windows decoded", "asr_windows_total"),
    Metric("asr_requests_finished_total", "counter", "Transcriptions finished", "asr_requests_finished"),
    Metric("asr_draft_tokens_total", "counter", "Whisper draft tokens verified (previous live hypotheses)", "asr_draft_tokens"),
    Metric("asr_draft_accepted_total", "counter", "Whisper draft tokens kept: decoder steps saved", "asr_draft_accepted"),
    Metric("tts_pieces_waiting", "gauge", "Pieces of text queued for speech synthesis", "tts_waiting"),
    Metric("tts_pieces_total", "counter", "Pieces of text spoken", "tts_pieces_total"),
    Metric("tts_audio_seconds_total", "counter", "Seconds of speech synthesized", "tts_audio_seconds_total"),
    Metric("tts_synthesis_seconds_total", "counter", "Inference-thread seconds spent synthesizing speech", "tts_synthesis_seconds_total"),
    Metric("engine_steps_total", "counter", "Engine steps run", "steps_total"),
)  # fmt: skip


def _number(value: float) -> str:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _sample(name: str, kind: str, help: str, value: float) -> list[str]:
    name = PREFIX + name
    return [f"# HELP {name} {help}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]


def render(
    stats: EngineStats,
    now: float | None = None,
    gauges: Sequence[Gauge] = (),
    replicas: Mapping[str, EngineStats] | None = None,
) -> str:
    """`replicas`: each engine replica's stats (a remote engine): every metric also gets a series per
    replica, labelled replica="ID", after the deployment's total."""
    lines: list[str] = []
    for metric in METRICS:
        lines += _sample(metric.name, metric.kind, metric.help, getattr(stats, metric.stat))
        for replica, own in sorted((replicas or {}).items()):
            lines.append(f'{PREFIX}{metric.name}{{replica="{replica}"}} {_number(getattr(own, metric.stat))}')
    for gauge in gauges:
        lines += _sample(gauge.name, "gauge", gauge.help, gauge.read())
    uptime = (now if now is not None else time.time()) - stats.started_at
    lines += [
        f"# HELP {PREFIX}uptime_seconds Seconds since the engine started",
        f"# TYPE {PREFIX}uptime_seconds gauge",
        f"{PREFIX}uptime_seconds {uptime:.3f}",
    ]
    return "\n".join(lines) + "\n"
