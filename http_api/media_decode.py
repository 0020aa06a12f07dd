"""Image bytes -> an RGB PIL image the model's processor reads: the format and pixel count checked from the
header before any pixel is decoded, then decoded and verified. Runs on a worker thread (http_api/media.py)."""

from __future__ import annotations

import hashlib
import io
import warnings

from PIL import Image, ImageOps

from engine.vision.inputs import MediaInput
from http_api.errors import APIError
from http_api.limits import MediaLimits

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


def too_many_pixels(width: int | None, height: int | None, limits: MediaLimits, param: str) -> APIError:
    size = f"{width}x{height} " if width and height else ""
    return APIError(
        f"The image {size}has more pixels than this server's limit of {limits.max_image_pixels} "
        "(--max-image-pixels)",
        param=param,
        code="image_too_large",
    )


def corrupt(param: str, detail: str) -> APIError:
    return APIError(f"The image could not be decoded: {detail}", param=param, code="invalid_image")


def open_checked(data: bytes, limits: MediaLimits, param: str) -> Image.Image:
    """The image opened lazily (only its header read), its format and size within the limits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:  # past twice PIL's own limit: its size goes unreported
        raise too_many_pixels(None, None, limits, param) from exc
    except Image.UnidentifiedImageError as exc:
        raise corrupt(param, f"not a {', '.join(f.lower() for f in IMAGE_FORMATS)} image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise corrupt(param, str(exc)) from exc
    width, height = image.size
    if width < 1 or height < 1 or width * height > limits.max_image_pixels:
        raise too_many_pixels(width, height, limits, param)
    return image


def decode_image(data: bytes, limits: MediaLimits, param: str, detail: str | None = None) -> MediaInput:
    """One image from its bytes; content_hash is the bytes' sha256 (the engine's embedding cache key)."""
    image = open_checked(data, limits, param)
    try:
        Image.open(io.BytesIO(data), formats=IMAGE_FORMATS).verify()  # a truncated or damaged file
        image.load()
        image = ImageOps.exif_transpose(image)  # the orientation the camera recorded, as HF's load_image
        rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise corrupt(param, str(exc) or type(exc).__name__) from exc
    return MediaInput("image", [rgb], hashlib.sha256(data).hexdigest(), detail=detail)
