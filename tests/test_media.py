"""Media inputs without a model: fetching (data:, http(s) from a local server, file://), decoding, the
limits, and how chat content parts and SGLang's image_data become media references. Each failure is an
APIError 400 that names the request field."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from http_api.errors import APIError
from http_api.limits import MediaLimits
from http_api.media import MediaRef, check_media_count, load_media
from http_api.media_decode import decode_image
from http_api.media_fetch import fetch_media_bytes
from http_api.protocol_openai.chat import ChatMessage
from http_api.protocol_sglang import GenerateRequest
from server.cli import main as cli_main  # noqa: F401 - the flags module imports cleanly
from server.cli_media import limit_mm_arg
from tests.media_server import MediaServer, data_url, giant_png_header, picture, serve_media, video

PARAM = "messages[0].content[1].image_url"
PNG = picture(48)


@pytest.fixture(scope="module")
def media() -> Iterator[MediaServer]:
    files = {"cat.png": PNG, "big.png": picture(48) + b"\0" * 300_000, "clip.mp4": video()}
    with serve_media(files) as server:
        yield server


async def rejected(url: str, limits: MediaLimits, code: str) -> APIError:
    with pytest.raises(APIError) as info:
        await load_media([MediaRef("image", url, PARAM)], limits)
    error = info.value
    assert (error.status, error.param, error.code) == (400, PARAM, code), error.message
    return error


async def test_data_urls_of_each_format_decode_to_rgb() -> None:
    for fmt, mime in (
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
    ):
        data = picture(40, fmt=fmt)
        (item,) = await load_media([MediaRef("image", data_url(data, mime), PARAM, "low")], MediaLimits())
        assert item.kind == "image" and item.detail == "low"
        assert item.content_hash == hashlib.sha256(data).hexdigest()
        (frame,) = item.frames
        assert frame.mode == "RGB" and frame.size == (40, 40)
        red, green, _ = frame.getpixel((25, 15))  # inside the square, off the diagonal
        assert red > 150 and green < 90, (fmt, frame.getpixel((25, 15)))


async def test_http_url_gives_the_same_bytes_as_a_data_url(media: MediaServer) -> None:
    from_http = await fetch_media_bytes(media.url("cat.png"), MediaLimits(), PARAM)
    from_data = await fetch_media_bytes(data_url(PNG), MediaLimits(), PARAM)
    assert from_http == from_data == PNG
    redirected = await fetch_media_bytes(media.url("redirect/cat.png"), MediaLimits(), PARAM)
    assert redirected == PNG


async def test_http_failures(media: MediaServer) -> None:
    error = await rejected(media.url("missing"), MediaLimits(), "media_fetch_failed")
    assert "404" in error.message
    error = await rejected(media.url("slow"), MediaLimits(fetch_timeout=0.5), "media_fetch_timeout")
    assert "0.5" in error.message
    await rejected(media.url("big.png"), MediaLimits(max_media_bytes=100_000), "media_too_large")
    await rejected("http://127.0.0.1:9/nothing-listens", MediaLimits(), "media_fetch_failed")


async def test_allowed_media_domains_is_an_exact_host_match(media: MediaServer) -> None:
    only_localhost = MediaLimits(allowed_media_domains=("localhost",))
    error = await rejected(media.url("cat.png"), only_localhost, "media_domain_not_allowed")
    assert "127.0.0.1" in error.message
    assert await fetch_media_bytes(media.url("cat.png", "localhost"), only_localhost, PARAM) == PNG
    # a redirect is checked again: localhost -> 127.0.0.1 is refused when only localhost is allowed
    to_loopback_ip = media.url("redirect/" + media.url("cat.png"), "localhost")
    await rejected(to_loopback_ip, only_localhost, "media_domain_not_allowed")
    assert await fetch_media_bytes(to_loopback_ip, MediaLimits(), PARAM) == PNG
    only_loopback_ip = MediaLimits(allowed_media_domains=("127.0.0.1",))
    await rejected(media.url("cat.png", "localhost"), only_loopback_ip, "media_domain_not_allowed")


async def test_unsupported_schemes_and_bad_data_urls() -> None:
    for url in ("ftp://example.com/cat.png", "cat.png", "gopher://x"):
        await rejected(url, MediaLimits(), "unsupported_media_url")
    await rejected("data:image/png;base64", MediaLimits(), "invalid_media")
    await rejected(data_url(PNG), MediaLimits(max_media_bytes=100), "media_too_large")


async def test_file_urls_only_under_the_allowed_path(tmp_path: Path) -> None:
    allowed = tmp_path / "media"
    allowed.mkdir()
    (allowed / "cat.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    os.symlink(tmp_path / "secret.png", allowed / "link.png")
    limits = MediaLimits(allowed_local_media_path=str(allowed))
    assert await fetch_media_bytes((allowed / "cat.png").as_uri(), limits, PARAM) == PNG
    await rejected((allowed / "cat.png").as_uri(), MediaLimits(), "media_path_not_allowed")
    escape = f"file://{allowed}/../secret.png"
    await rejected(escape, limits, "media_path_not_allowed")
    await rejected((allowed / "link.png").as_uri(), limits, "media_path_not_allowed")  # symlink out
    await rejected((allowed / "none.png").as_uri(), limits, "media_not_found")
    await rejected((tmp_path / "absent.png").as_uri(), limits, "media_path_not_allowed")  # not probed


async def test_corrupt_and_oversized_images() -> None:
    await rejected(data_url(b"this is not an image"), MediaLimits(), "invalid_image")
    await rejected(data_url(PNG[: len(PNG) // 2]), MediaLimits(), "invalid_image")  # truncated
    error = await rejected(data_url(giant_png_header()), MediaLimits(), "image_too_large")
    assert "pixels" in error.message
    # under PIL's own bomb limit, our limit reads the size from the header (nothing is decoded)
    error = await rejected(data_url(giant_png_header(6000, 6000)), MediaLimits(), "image_too_large")
    assert "6000x6000" in error.message
    with pytest.raises(APIError) as info:
        decode_image(PNG, MediaLimits(max_image_pixels=48 * 48 - 1), PARAM)
    assert info.value.code == "image_too_large"


async def test_video_frames_are_sampled_at_the_set_rate(media: MediaServer) -> None:
    ref = MediaRef("video", media.url("clip.mp4"), "messages[0].content[0].video_url")
    (clip,) = await load_media([ref], MediaLimits(video_fps=2.0))
    brightness = [frame.getpixel((16, 16))[0] for frame in clip.frames]
    assert len(brightness) == 4 and clip.fps == 2.0  # 2 s at 2 frames/s: t = 0, 0.5, 1, 1.5
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 120
    (few,) = await load_media([ref], MediaLimits(video_fps=10.0, max_video_frames=3))
    assert len(few.frames) == 3
    with pytest.raises(APIError) as info:
        await load_media([MediaRef("video", data_url(b"not a video at all" * 50), "v")], MediaLimits())
    assert info.value.code == "invalid_video"


def test_chat_parts_become_template_parts_and_references() -> None:
    message = ChatMessage(
        role="user",
        content=[
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
            {"type": "image_url", "image_url": "http://example.com/b.png"},
            {"type": "input_image", "image_url": "http://example.com/c.png", "detail": "low"},
            {"type": "text", "text": "and"},
            {"type": "video_url", "video_url": {"url": "http://example.com/v.mp4"}},
        ],
    )
    refs: list[MediaRef] = []
    template = message.to_template(2, refs)
    kinds = [part["type"] for part in template["content"]]
    assert kinds == ["text", "image", "image", "image", "text", "video"]
    assert [(r.kind, r.detail, r.param) for r in refs] == [
        ("image", "high", "messages[2].content[1].image_url"),
        ("image", None, "messages[2].content[2].image_url"),
        ("image", "low", "messages[2].content[3].image_url"),
        ("video", None, "messages[2].content[5].video_url"),
    ]
    assert ChatMessage(role="system", content="Be brief").to_template(0, refs)["content"] == [
        {"type": "text", "text": "Be brief"}
    ]
    with pytest.raises(APIError) as info:  # a text-only model: today's 400
        message.to_template(2)
    assert (info.value.code, info.value.param) == ("unsupported_content_type", "messages[2].content[1].type")
    bad = ChatMessage(role="user", content=[{"type": "image_url", "image_url": {"detail": "low"}}])
    with pytest.raises(APIError) as info:
        bad.to_template(0, [])
    assert info.value.param == "messages[0].content[0].image_url"


def test_limit_mm_per_prompt() -> None:
    limits = MediaLimits(limit_mm_per_prompt=limit_mm_arg('{"image": 2}'))
    assert limits.limit_mm_per_prompt == {"image": 2, "video": 1}
    refs = [MediaRef("image", "u", f"p{i}") for i in range(3)]
    check_media_count(refs[:2], limits, "messages", video_ok=True)
    with pytest.raises(APIError) as info:
        check_media_count(refs, limits, "messages", video_ok=True)
    assert info.value.code == "too_many_media_items" and "At most 2 image(s)" in info.value.message
    with pytest.raises(APIError) as info:
        check_media_count([MediaRef("video", "u", "v")], limits, "messages", video_ok=False)
    assert (info.value.code, info.value.param) == ("unsupported_content_type", "v")
    for text in ('{"audio": 1}', '{"image": -1}', "[1]", "nope"):
        with pytest.raises(Exception):  # noqa: B017 - argparse.ArgumentTypeError
            limit_mm_arg(text)


def test_sglang_image_data_shapes() -> None:
    one = GenerateRequest(text="<image> what?", image_data="http://h/a.png")
    assert one.images_for(0, 1) == [("http://h/a.png", "image_data")]
    raw = GenerateRequest(text="x", image_data=["iVBORw0KGgo=", "/tmp/a.png"])
    assert raw.images_for(0, 1) == [
        ("data:;base64,iVBORw0KGgo=", "image_data[0]"),
        ("file:///tmp/a.png", "image_data[1]"),
    ]
    batch = GenerateRequest(text=["a", "b"], image_data=[None, ["data:image/png;base64,AA"]])
    assert batch.images_for(0, 2) == []
    assert batch.images_for(1, 2) == [("data:image/png;base64,AA", "image_data[1][0]")]
    with pytest.raises(APIError):
        GenerateRequest(text=["a", "b"], image_data=["x"]).images_for(0, 2)
    with pytest.raises(APIError) as info:
        GenerateRequest(text="x", image_data="a").check_supported(reads_images=False)
    assert info.value.param == "image_data"
    GenerateRequest(text="x", image_data="a").check_supported(reads_images=True)
