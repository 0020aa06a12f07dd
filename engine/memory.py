"""Giving idle memory back to the OS (Linux; a no-op elsewhere).

Two things keep RSS high after a burst of work on a CPU: pages of the KV cache that a burst touched
(one big tensor, so freeing blocks frees nothing), and glibc's malloc arenas, which keep freed chunks
of the inference and event-loop threads. The engine calls these once it has been idle a while.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


_LIBC = _libc()
if _LIBC is not None:
    _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _LIBC.madvise.restype = ctypes.c_int


def release_pages(address: int, length: int) -> int:
    """Drop the whole pages inside [address, address + length) (they read back as zeros); bytes released."""
    start = -(-address // PAGE) * PAGE
    end = (address + length) // PAGE * PAGE
    if _LIBC is None or end <= start:
        return 0
    if _LIBC.madvise(start, end - start, MADV_DONTNEED) != 0:
        return 0
    return end - start


def trim_heap() -> None:
    """Return free memory at the top of malloc's heaps and in its arenas to the OS."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
