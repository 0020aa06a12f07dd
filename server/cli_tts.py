"""`rtserve serve` flags for speech synthesis (/v1/audio/speech and spoken replies in /v1/realtime)."""

from __future__ import annotations

import argparse

from engine.models.piper_voice import DEFAULT_VOICE


def add_tts_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("speech synthesis")
    group.add_argument(
        "--tts", action="append", metavar="MODEL",
        help=f"Piper voice to speak with: a local Piper .onnx (its .onnx.json beside it) or an installed voice "
        f"package name; repeat the flag for more voices (the first is the default), 'none' for no speech "
        f"synthesis (default: {DEFAULT_VOICE}, the embedded 'joe' voice)",
    )  # fmt: skip


def tts_voices(values: list[str] | None) -> list[str]:
    names = [value.strip() for value in (values or [DEFAULT_VOICE]) if value.strip()]
    return [] if [n.lower() for n in names] == ["none"] else names
