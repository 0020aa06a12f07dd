"""Turn uploaded audio bytes into float32 mono 16 kHz samples."""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
import soxr

from audio.constants import SAMPLE_RATE

DECODE_BLOCK_FRAMES = 1 << 18  # frames decoded at a time (about 5 s at 48 kHz)
FORMATS = "wav, flac, ogg, mp3, mp4, m4a, mpeg, mpga or webm"


class AudioDecodeError(ValueError):
    """The input is not audio we can read; the message is fit to show to a user."""


class AudioTooLongError(AudioDecodeError):
    """The decoded audio lasts longer than the limit. `seconds`: its duration when the header gave it
    (None: decoding stopped at the limit, so it is only known to be longer)."""

    def __init__(self, seconds: float | None, limit_s: float) -> None:
        lasts = f"{seconds:.1f} seconds" if seconds is not None else f"more than {limit_s:g} seconds"
        super().__init__(f"the audio lasts {lasts}; the limit is {limit_s:g} seconds")
        self.seconds = seconds
        self.limit_s = limit_s


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    if from_rate <= 0 or to_rate <= 0:
        raise AudioDecodeError(f"invalid sample rate {from_rate} -> {to_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate or audio.size == 0:
        return audio
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def decode_audio_file(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode an upload to float32 mono 16 kHz: what libsndfile reads (wav, flac, ogg/vorbis/opus, mp3...)
    through it, and the containers it does not (mp4/m4a, webm/mkv, AAC, MPEG) through PyAV (FFmpeg).

    `max_seconds`: the longest decoded duration accepted. A header that says more is refused before any
    decoding, and decoding stops as soon as it passes the limit (a header may lie, a stream may have none):
    a small upload of a compressed hour costs no more than the limit's worth of work."""
    if not data:
        raise AudioDecodeError("the audio file is empty")
    limit_s = math.inf if max_seconds is None else max_seconds
    container = sniff_container(data)
    if container in AV_ONLY:
        mono, rate = decode_with_av(data, container, limit_s)
    else:
        try:
            mono, rate = decode_with_sndfile(data, limit_s)
        except AudioTooLongError:
            raise
        except AudioDecodeError:
            if container is None:
                raise
            mono, rate = decode_with_av(data, container, limit_s)  # e.g. an Ogg codec libsndfile lacks
    if mono.size == 0:
        raise AudioDecodeError("the audio file contains no samples")
    return resample(mono, rate, SAMPLE_RATE)


def decode_with_sndfile(data: bytes, limit_s: float) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = int(f.samplerate)
            if f.frames > limit_s * rate:
                raise AudioTooLongError(f.frames / rate, limit_s)
            mono = read_mono(f, limit_s * rate)
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioDecodeError(f"could not decode the audio file ({exc}); send {FORMATS}") from exc
    if mono is None:
        raise AudioTooLongError(None, limit_s)
    return mono, rate


def read_mono(f: sf.SoundFile, max_frames: float) -> np.ndarray | None:
    """Every frame as float32 mono, decoded block by block; None as soon as there are more than max_frames."""
    blocks: list[np.ndarray] = []
    frames = 0
    while (block := f.read(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True)).shape[0]:
        frames += block.shape[0]
        if frames > max_frames:
            return None
        mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
        if not np.all(np.isfinite(mono)):
            raise AudioDecodeError("the audio file contains invalid (non-finite) samples")
        blocks.append(mono.astype(np.float32, copy=False))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1). A trailing odd byte is an error."""
    if len(data) % 2:
        raise AudioDecodeError("PCM16 audio must have an even number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


# ---- containers libsndfile does not read, decoded by PyAV. Only these demuxers are ever opened: FFmpeg
# would otherwise probe for any of its formats, some of which (playlists, concat) read other files.

AV_ONLY = frozenset({"mp4", "matroska", "aac", "mpeg"})  # Ogg and MP3 go to libsndfile first
_CONTAINER_NAMES = {
    "mp4": "mp4/m4a",
    "matroska": "webm",
    "aac": "AAC",
    "mpeg": "MPEG",
    "mp3": "mp3",
    "ogg": "ogg",
}
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide")


def sniff_container(data: bytes) -> str | None:
    """The FFmpeg demuxer for the container these bytes start like, or None for one PyAV is not used for."""
    head = data[:12]
    if head[4:8] in _MP4_BOXES:
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # webm (a browser's MediaRecorder) and mkv
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"  # an MPEG program stream
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "aac" if head[1] & 0x06 == 0 else "mp3"  # ADTS has layer bits 00
    return None


def decode_with_av(data: bytes, container: str, limit_s: float) -> tuple[np.ndarray, int]:
    """The first audio track as float32 mono at its own rate, decoded frame by frame up to the limit."""
    import av

    name = _CONTAINER_NAMES.get(container, container)
    try:
        with av.open(io.BytesIO(data), mode="r", format=container) as media:
            stream = next((s for s in media.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioDecodeError(f"the {name} file has no audio track")
            declared = _declared_seconds(media, stream)
            if declared is not None and declared > limit_s:
                raise AudioTooLongError(declared, limit_s)
            return _read_av_mono(media, stream, limit_s)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AudioDecodeError(
            f"could not decode the audio file: it looks like {name} but is truncated or damaged ({reason}); "
            f"send a complete file: {FORMATS}"
        ) from exc


def _declared_seconds(media: object, stream: object) -> float | None:
    duration, time_base = getattr(stream, "duration", None), getattr(stream, "time_base", None)
    if duration and time_base:
        return float(duration * time_base)
    whole = getattr(media, "duration", None)  # in microseconds (av.time_base)
    return whole / 1_000_000 if whole else None


def _read_av_mono(media: object, stream: object, limit_s: float) -> tuple[np.ndarray, int]:
    import av

    to_float = av.AudioResampler(format="fltp")  # keeps the layout and rate; planar [channels, samples]
    blocks: list[np.ndarray] = []
    frames, rate = 0, 0
    for frame in media.decode(stream):  # type: ignore[attr-defined]
        rate = rate or int(frame.sample_rate)
        for converted in to_float.resample(frame):
            pcm = converted.to_ndarray()
            mono = pcm.mean(axis=0) if pcm.shape[0] > 1 else pcm[0]
            if not np.all(np.isfinite(mono)):
                raise AudioDecodeError("the audio file contains invalid (non-finite) samples")
            blocks.append(mono.astype(np.float32, copy=False))
            frames += mono.shape[0]
        if frames > limit_s * rate:
            raise AudioTooLongError(None, limit_s)
    if not blocks:
        raise AudioDecodeError("the audio file contains no samples")
    return np.concatenate(blocks), rate
