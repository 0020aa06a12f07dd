"""Reader for CTranslate2's `model.bin` (the layout `ctranslate2.specs.model_spec._serialize` writes).

Layout, little-endian:
    u32 binary_version, string spec_name, u32 revision (version >= 2),
    u32 num_variables, then per variable:
        string name, u8 rank, u32 dims[rank], u8 dtype_id, u32 num_bytes, bytes data
    u32 num_aliases (version >= 3), then per alias: string alias, string target
where a string is u16 length (including the trailing NUL) + bytes + NUL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class CT2FormatError(ValueError):
    pass


@dataclass
class CT2Model:
    spec_name: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)  # aliases resolved to the same array


class _Cursor:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise CT2FormatError("model.bin is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<H")
        raw = bytes(self.data[self.pos : self.pos + length])
        self.pos += length
        return raw.rstrip(b"\0").decode("utf-8")

    def take(self, num_bytes: int) -> memoryview:
        if self.pos + num_bytes > len(self.data):
            raise CT2FormatError("model.bin is truncated")
        chunk = self.data[self.pos : self.pos + num_bytes]
        self.pos += num_bytes
        return chunk


def _to_array(raw: memoryview, dtype_name: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype_name == "bfloat16":
        # numpy has no bfloat16: widen to float32 by placing the 16 bits in the high half.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype_name).newbyteorder("<")).reshape(shape).copy()


def parse_ct2(data: bytes | memoryview) -> CT2Model:
    """Parse a whole model.bin held in memory. fp16 weights stay fp16; int8 ones come with their `_scale`."""
    cur = _Cursor(data)
    version = cur.unpack("<I")
    if version < 1 or version > 6:
        raise CT2FormatError(f"unsupported CTranslate2 binary version {version}")
    spec_name = cur.string() if version >= 2 else ""
    revision = cur.unpack("<I") if version >= 2 else 1
    model = CT2Model(spec_name=spec_name, revision=revision, binary_version=version)
    for _ in range(cur.unpack("<I")):
        name = cur.string()
        rank = cur.unpack("<B")
        shape = tuple(cur.unpack("<I") for _ in range(rank))
        if version >= 4:
            dtype_id = cur.unpack("<B")
            num_bytes = cur.unpack("<I")
        else:  # older files stored the item size, implying float32/int8/int16/int32
            item_size = cur.unpack("<B")
            dtype_id = {4: 0, 1: 1, 2: 2}.get(item_size, 0)
            num_bytes = item_size * int(np.prod(shape, dtype=np.int64))
        if dtype_id >= len(_DTYPES):
            raise CT2FormatError(f"variable {name}: unknown dtype id {dtype_id}")
        model.variables[name] = _to_array(cur.take(num_bytes), _DTYPES[dtype_id], shape)
    if version >= 3 and cur.pos < len(cur.data):
        for _ in range(cur.unpack("<I")):
            alias = cur.string()
            target = cur.string()
            if target not in model.variables:
                raise CT2FormatError(f"alias {alias} points at missing variable {target}")
            model.variables[alias] = model.variables[target]
    return model


def read_ct2(paths: Path | str | list[Path]) -> CT2Model:
    """Read a model.bin, or the byte-concatenation of several parts of one."""
    parts = [paths] if isinstance(paths, (str, Path)) else paths
    data = b"".join(Path(p).read_bytes() for p in parts)
    return parse_ct2(data)
