"""Test media made at test time (PIL images, a PyAV video, a header-only giant PNG) and a local HTTP server
that serves them, plus a 404, a slow URL and a redirect (tests/test_media.py, tests/test_vlm_server.py)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
from PIL import Image, ImageDraw


def picture(size: int = 48, color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    """A small picture: a coloured square on white with a dark diagonal."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=color)
    draw.line([0, 0, size, size], fill=(10, 10, 10), width=3)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def giant_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG that claims width x height pixels with (almost) no pixel data: a pixel limit must refuse it
    from the header alone."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def video(seconds: float = 2.0, fps: int = 10, size: int = 32) -> bytes:
    """An mp4 whose frames change colour over time."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            pixels = np.full((size, size, 3), (i * 12) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@dataclass
class MediaServer:
    """Serves `files` at /NAME; /missing is a 404, /slow answers after 5 s, /redirect/NAME redirects."""

    files: dict[str, bytes] = field(default_factory=dict)
    base_url: str = ""
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return self.base_url.replace("127.0.0.1", host) + "/" + name


def handler_for(media: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            name = self.path.lstrip("/")
            media.hits[name] = media.hits.get(name, 0) + 1
            if name.startswith("redirect/"):
                self.send_response(302)
                target = name.removeprefix("redirect/")
                self.send_header("Location", target if target.startswith("http") else "/" + target)
                self.end_headers()
                return
            if name == "slow":
                time.sleep(5)
            body = media.files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (the timeout and size-limit tests) is expected here


@contextmanager
def serve_media(files: dict[str, bytes]) -> Iterator[MediaServer]:
    media = MediaServer(dict(files))
    httpd = QuietServer(("127.0.0.1", 0), handler_for(media))
    media.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield media
    finally:
        httpd.shutdown()
        httpd.server_close()
