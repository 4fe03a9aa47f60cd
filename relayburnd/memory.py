"""Giving freed memory back to the operating system after a burst of work.

CPython returns its small-object arenas only when they are entirely free, and
glibc keeps freed heap pages for reuse, so a daemon that shipped a large
backlog keeps its high-water mark for as long as it runs. ``malloc_trim``
returns the free pages; where the C library has none (musl, macOS) this is a
no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked_up = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked_up
    if not _looked_up:
        _looked_up = True
        name = ctypes.util.find_library("c")
        try:
            _trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            _trim = None
    return _trim


def release_free_memory() -> bool:
    """Collect garbage and hand free heap pages back; whether the C library could."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["release_free_memory"]
