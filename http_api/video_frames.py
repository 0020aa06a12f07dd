"""Video bytes -> frames sampled with PyAV at --video-fps, at most --max-video-frames of them, each an RGB
PIL image. Runs on a worker thread (http_api/media.py)."""

from __future__ import annotations

import hashlib
import io

import av

from engine.vision.inputs import MediaInput
from http_api.errors import APIError
from http_api.limits import MediaLimits
from http_api.media_decode import too_many_pixels


def invalid_video(param: str, detail: str) -> APIError:
    return APIError(f"The video could not be decoded: {detail}", param=param, code="invalid_video")


def decode_video(data: bytes, limits: MediaLimits, param: str) -> MediaInput:
    """Frames at the times 0, 1/fps, 2/fps, ... (the first frame at or after each), until the video or
    the frame budget ends. The frame size is checked from the stream header before decoding."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise invalid_video(param, str(exc)) from exc
    with container:
        if not container.streams.video:
            raise invalid_video(param, "it has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_image_pixels:
            raise too_many_pixels(width, height, limits, param)
        frames = sample_frames(container, stream, limits, param)
    if not frames:
        raise invalid_video(param, "no frame decoded")
    return MediaInput("video", frames, hashlib.sha256(data).hexdigest(), fps=limits.video_fps)


def sample_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  limits: MediaLimits, param: str) -> list:  # fmt: skip
    step = 1.0 / limits.video_fps
    next_time = 0.0
    frames = []
    try:
        for index, frame in enumerate(container.decode(stream)):
            time = frame.time if frame.time is not None else index / float(stream.average_rate or 25)
            if time + 1e-6 < next_time:
                continue
            if frame.width * frame.height > limits.max_image_pixels:
                raise too_many_pixels(frame.width, frame.height, limits, param)
            frames.append(frame.to_image().convert("RGB"))
            while next_time <= time + 1e-6:
                next_time += step
            if len(frames) >= limits.max_video_frames:
                break
    except av.error.FFmpegError as exc:
        if not frames:
            raise invalid_video(param, str(exc)) from exc
    return frames
