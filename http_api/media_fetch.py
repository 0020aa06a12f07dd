"""The bytes behind a media URL: `data:` (base64), http(s) fetched within a time and size limit from the
allowed domains, and `file://` under the allowed local directory. Every failure is a 400 naming the
request field the URL came from."""

from __future__ import annotations

import asyncio
import base64
import binascii
from pathlib import Path
from urllib.parse import unquote_to_bytes, urljoin, urlsplit
from urllib.request import url2pathname

import aiohttp

from http_api.errors import APIError
from http_api.limits import MediaLimits

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024


def media_error(message: str, param: str, code: str = "invalid_media") -> APIError:
    return APIError(message, status=400, param=param, code=code)


def too_large(limits: MediaLimits, param: str) -> APIError:
    return media_error(
        f"The media is larger than this server's limit of {limits.max_media_bytes} bytes (--max-media-bytes)",
        param,
        "media_too_large",
    )


async def fetch_media_bytes(url: str, limits: MediaLimits, param: str) -> bytes:
    """The bytes a media URL names."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return data_url_bytes(url, limits, param)
    if scheme in ("http", "https"):
        return await http_bytes(url, limits, param)
    if scheme == "file":
        return await asyncio.to_thread(file_bytes, url, limits, param)
    shown = f"'{scheme}'" if scheme else "none"
    raise media_error(
        f"Unsupported media URL scheme ({shown}): use a data: URL (base64), http(s):// or file://",
        param,
        "unsupported_media_url",
    )


def data_url_bytes(url: str, limits: MediaLimits, param: str) -> bytes:
    """RFC 2397: data:[<mediatype>][;base64],<data>."""
    header, comma, payload = url.partition(",")
    if not comma:
        raise media_error("A data: URL needs a ',' before its data", param)
    if header.lower().endswith(";base64"):
        if len(payload) * 3 // 4 > limits.max_media_bytes + 3:  # refused before decoding
            raise too_large(limits, param)
        try:
            data = base64.b64decode(payload.strip(), validate=False)
        except (binascii.Error, ValueError) as exc:
            raise media_error(f"The data: URL's base64 does not decode: {exc}", param) from exc
    else:
        data = unquote_to_bytes(payload)
    if len(data) > limits.max_media_bytes:
        raise too_large(limits, param)
    if not data:
        raise media_error("The data: URL holds no data", param)
    return data


def check_domain(url: str, limits: MediaLimits, param: str) -> None:
    """vLLM's --allowed-media-domains: the URL's host must be one of them, exactly."""
    allowed = limits.allowed_media_domains
    host = urlsplit(url).hostname
    if allowed is not None and host not in allowed:
        raise media_error(
            f"The media URL must be from one of the allowed domains: {list(allowed)}. "
            f"Input URL domain: {host}",
            param,
            "media_domain_not_allowed",
        )


async def http_bytes(url: str, limits: MediaLimits, param: str) -> bytes:
    """GET the URL (redirects followed by hand, each target checked against the allowed domains),
    reading at most --max-media-bytes and giving up after --media-fetch-timeout seconds."""
    timeout = aiohttp.ClientTimeout(total=limits.fetch_timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_REDIRECTS + 1):
                check_domain(url, limits, param)
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return await read_body(response, url, limits, param)
    except asyncio.TimeoutError as exc:
        raise media_error(
            f"Fetching the media URL took longer than {limits.fetch_timeout:g} s (--media-fetch-timeout)",
            param,
            "media_fetch_timeout",
        ) from exc
    except aiohttp.ClientError as exc:
        raise media_error(
            f"Fetching the media URL failed: {type(exc).__name__}: {exc}", param, "media_fetch_failed"
        ) from exc
    raise media_error(
        f"The media URL redirected more than {MAX_REDIRECTS} times", param, "media_fetch_failed"
    )


async def read_body(response: aiohttp.ClientResponse, url: str, limits: MediaLimits, param: str) -> bytes:
    if response.status >= 400:
        raise media_error(
            f"Fetching the media URL failed: the server answered HTTP {response.status} {response.reason}",
            param,
            "media_fetch_failed",
        )
    if response.content_length is not None and response.content_length > limits.max_media_bytes:
        raise too_large(limits, param)
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limits.max_media_bytes:
            raise too_large(limits, param)  # stop reading: the rest is never downloaded
    if not body:
        raise media_error(f"The media URL {url} returned no data", param)
    return bytes(body)


def file_bytes(url: str, limits: MediaLimits, param: str) -> bytes:
    """A file:// URL's bytes, only under --allowed-local-media-path (after resolving .. and symlinks)."""
    if not limits.allowed_local_media_path:
        raise media_error(
            "file:// media URLs are not allowed on this server (no --allowed-local-media-path)",
            param,
            "media_path_not_allowed",
        )
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise media_error("A file:// URL must name a local path (file:///path)", param)
    root = Path(limits.allowed_local_media_path).resolve()
    try:
        path = Path(url2pathname(parts.path)).resolve()  # symlinks and .. resolved before the check
    except (OSError, RuntimeError) as exc:
        raise media_error("The file:// URL names no readable file", param, "media_not_found") from exc
    if not path.is_relative_to(root):  # checked first: files outside the root are neither read nor probed
        raise media_error(
            "The file:// URL must name a file under the server's --allowed-local-media-path",
            param,
            "media_path_not_allowed",
        )
    if not path.is_file():
        raise media_error("The file:// URL names no readable file", param, "media_not_found")
    if path.stat().st_size > limits.max_media_bytes:
        raise too_large(limits, param)
    return path.read_bytes()
