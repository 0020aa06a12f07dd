"""`rtserve serve` flags for images and videos sent to a vision-language LLM (vLLM's names where it has
them): where media may come from, how big it may be, how videos are sampled."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.config import EngineConfig
from http_api.limits import MediaLimits
from server.cli_types import positive_float, positive_int

MEDIA_KINDS = ("image", "video")


def limit_mm_arg(text: str) -> dict[str, int]:
    """vLLM's --limit-mm-per-prompt JSON, e.g. '{"image": 4, "video": 1}'; kinds not named keep their
    default."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object like {"image": 4, "video": 1}')
    for kind, count in value.items():
        if kind not in MEDIA_KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}: use {', '.join(MEDIA_KINDS)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise argparse.ArgumentTypeError(f"{kind}: the limit must be an integer >= 0, got {count!r}")
    return {**MediaLimits().limit_mm_per_prompt, **value}


def local_media_dir(text: str) -> str:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return str(path.resolve())


def add_media_args(p: argparse.ArgumentParser, limits: MediaLimits) -> None:
    group = p.add_argument_group("images and videos (a vision-language --llm)")
    group.add_argument(
        "--media-fetch-timeout", type=positive_float, default=limits.fetch_timeout, metavar="SECONDS",
        help="seconds to fetch one http(s) image or video URL, connect to last byte (then a 400)",
    )  # fmt: skip
    group.add_argument(
        "--max-media-bytes", type=positive_int, default=limits.max_media_bytes, metavar="BYTES",
        help="largest image or video, fetched, read from a file:// URL or decoded from a data: URL; "
        "fetching stops past it (a 400)",
    )  # fmt: skip
    group.add_argument(
        "--allowed-media-domains", nargs="+", default=None, metavar="DOMAIN",
        help="only fetch http(s) media URLs whose host is one of these, exactly (vLLM's rule; redirects are "
        "checked too); default: any host",
    )  # fmt: skip
    group.add_argument(
        "--allowed-local-media-path", type=local_media_dir, default=None, metavar="DIR",
        help="serve file:// media URLs under this directory only (after resolving .. and symlinks); "
        "default: file:// URLs are refused. Lets API users read these files: name a directory of media only",
    )  # fmt: skip
    group.add_argument(
        "--max-image-pixels", type=positive_int, default=limits.max_image_pixels, metavar="N",
        help="most pixels (width x height) in one image or video frame, checked from its header before "
        "decoding (a 400)",
    )  # fmt: skip
    group.add_argument(
        "--video-fps", type=positive_float, default=limits.video_fps,
        help="frames sampled per second of a video_url video",
    )  # fmt: skip
    group.add_argument(
        "--max-video-frames", type=positive_int, default=limits.max_video_frames, metavar="N",
        help="most frames sampled from one video (sampling stops there)",
    )  # fmt: skip
    group.add_argument(
        "--mm-embedding-cache-mib", type=positive_int, default=EngineConfig.mm_embedding_cache_mib, metavar="MIB",
        help="memory for image and video embeddings kept by content hash, so that a repeated image (a chat "
        "about one picture) is encoded once; least recently used first out",
    )  # fmt: skip
    group.add_argument(
        "--max-prefill-media", type=positive_int, default=None, metavar="N",
        help="images and videos encoded in one engine step (then running replies get a token before the next "
        "such step); default: 1 on a CPU, where a vision pass costs the sum of its images, 16 on a GPU",
    )  # fmt: skip
    group.add_argument(
        "--limit-mm-per-prompt", type=limit_mm_arg, default=limits.limit_mm_per_prompt, metavar="JSON",
        help='most images and videos in one request, as vLLM spells it: \'{"image": 4, "video": 1}\' '
        "(more is a 400)",
    )  # fmt: skip


def media_limits(args: argparse.Namespace) -> MediaLimits:
    return MediaLimits(
        fetch_timeout=args.media_fetch_timeout,
        max_media_bytes=args.max_media_bytes,
        allowed_media_domains=tuple(args.allowed_media_domains) if args.allowed_media_domains else None,
        allowed_local_media_path=args.allowed_local_media_path,
        max_image_pixels=args.max_image_pixels,
        video_fps=args.video_fps,
        max_video_frames=args.max_video_frames,
        limit_mm_per_prompt=dict(args.limit_mm_per_prompt),
    )
