"""The HTTP front end's own limits (the server's settings compose them with the other front ends')."""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass
class MediaLimits:
    """Images and videos in LLM requests (http_api/media.py; the flags: server/cli_media.py)."""

    fetch_timeout: float = 10.0  # seconds for one http(s) media URL, connect to last byte
    max_media_bytes: int = 20 * MiB  # one image or video, fetched, read or decoded from base64
    # None: any host; else only http(s) URLs whose host is one of these (vLLM's exact-host rule)
    allowed_media_domains: tuple[str, ...] | None = None
    allowed_local_media_path: str | None = None  # file:// URLs only under this directory (None: none)
    max_image_pixels: int = 25_000_000  # width x height of an image or video frame, read from its header
    video_fps: float = 2.0  # frames sampled per second of video
    max_video_frames: int = 32  # most frames sampled from one video
    # vLLM's --limit-mm-per-prompt: most items of each kind in one request
    limit_mm_per_prompt: dict[str, int] = field(default_factory=lambda: {"image": 8, "video": 1})


@dataclass
class HTTPLimits:
    max_audio_bytes: int = 25 * MiB  # upload limit for /v1/audio/*
    max_audio_seconds: float = 3600.0  # decoded duration limit for /v1/audio/* (decoding stops past it)
    max_json_bytes: int = 8 * MiB  # limit for JSON request bodies
    # The work one request may ask for (http_api/budget.py): sequences are prompts x n; tokens are every
    # sequence's prompt plus the most it may generate.
    max_sequences_per_request: int = 128
    max_tokens_per_request: int = 131072
    # /v1/responses keeps at most this many responses (previous_response_id, GET), none past this age
    responses_store_size: int = 1000
    responses_store_ttl: float = 3600.0
    trust_request_chat_template: bool = False  # render a chat_template sent with a request (else a 400)
    # Chat output parsing (server/cli_chat.py): the tool-call parser for tool_choice "auto" (None: "auto"
    # is refused), whether "auto" is on, and the reasoning parser (None: thinking stays in content)
    tool_call_parser: str | None = "hermes"
    enable_auto_tool_choice: bool = True
    reasoning_parser: str | None = None
    enable_lora_runtime_updates: bool = False  # serve the LoRA load/unload routes (http_api/routes_lora.py)
    media: MediaLimits = field(default_factory=MediaLimits)  # images and videos (a vision-language LLM)
