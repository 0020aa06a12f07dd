"""Split long audio into <= 30 s windows, cutting where it is quietest."""

from __future__ import annotations

import numpy as np

from audio.constants import SAMPLE_RATE

SEARCH_SECONDS = 5.0  # look this far back from each window's limit for a quiet spot
FRAME_SECONDS = 0.1


def split_windows(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, max_seconds: float = 30.0
) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges covering all of `audio`, each at most `max_seconds` long."""
    total = len(audio)
    max_len = int(max_seconds * sample_rate)
    if total == 0:
        return []
    frame = max(1, int(FRAME_SECONDS * sample_rate))
    search = min(int(SEARCH_SECONDS * sample_rate), max_len // 2)
    windows: list[tuple[int, int]] = []
    start = 0
    while total - start > max_len:
        limit = start + max_len
        region = np.asarray(audio[limit - search : limit], dtype=np.float32)
        num_frames = len(region) // frame
        if num_frames == 0:
            cut = limit
        else:
            # Energy of each ~100 ms frame ending at or before the limit; cut in the middle of the quietest.
            tail = region[len(region) - num_frames * frame :]
            energy = np.square(tail).reshape(num_frames, frame).mean(axis=1)
            quietest = int(np.argmin(energy[::-1]))  # ties go to the latest frame: longer windows
            frame_index = num_frames - 1 - quietest
            cut = limit - len(tail) + frame_index * frame + frame // 2
        windows.append((start, cut))
        start = cut
    windows.append((start, total))
    return windows
