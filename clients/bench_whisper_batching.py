"""What cross-session batching can save on this machine: Whisper's per-window costs by batch size.

    python -m clients.bench_whisper_batching                 # whisper-tiny.en, fp32
    python -m clients.bench_whisper_batching --asr-quantize int8

Runs the engine's WhisperRunner (engine/asr/model_runner.py) in-process (no server: this measures the
model pieces that the realtime benchmark's two servers share). For batches of 1, 2, 4 and 8 copies of one synthesized
utterance with trimmed 10 s context, it prints the cost per window of a start (log-mel, encoder,
cross-attention keys, prompt prefill) and of one decoder step. A start that costs the same per window
at any batch size is work batching cannot share; that bounds what batching can gain.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="bench_whisper_batching",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="whisper-tiny.en")
    p.add_argument("--asr-quantize", choices=["none", "int8"], default="none")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    from audio.constants import SAMPLE_RATE
    from engine.asr.job import WhisperJob
    from engine.asr.model_runner import WhisperRunner
    from engine.config import default_cache_dir
    from engine.models.quantize import quantize_whisper_int8
    from engine.models.whisper_loader import load_whisper
    from tests.speech import synthesize

    bundle = load_whisper(args.model, default_cache_dir(), "cpu")
    if args.asr_quantize == "int8":
        quantize_whisper_int8(bundle.model)
    runner = WhisperRunner(bundle, "cpu")
    audio = synthesize("The quick brown fox jumps over the lazy dog.")
    print(f"{args.model} ({args.asr_quantize}), {len(audio) / SAMPLE_RATE:.1f} s utterance, trimmed 10 s context, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    one_start = 0.0
    with torch.inference_mode():
        for size in (1, 2, 4, 8):
            jobs = [WhisperJob(audio, encoder_context="trimmed", prompt="Good morning.") for _ in range(size)]
            start = best_of(lambda: runner.start(jobs), args.repeats)  # noqa: B023
            batch = runner.start(jobs)
            step = best_of(lambda: runner.step(batch), 3)  # noqa: B023 (a few tokens of the ~11 there are)
            one_start = one_start or start
            print(
                f"  batch {size}: start {start * 1000:6.1f} ms ({start / size * 1000:5.1f} ms per window, "
                f"{one_start * size / start:.2f}x the throughput of one) | decoder step {step * 1000:5.1f} ms "
                f"({step / size * 1000:4.2f} ms per row)"
            )


if __name__ == "__main__":
    main()
