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
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library found, or no malloc_trim
        return None
    return trim


def release_free_memory() -> bool:
    """Collect garbage and hand free heap pages back; whether the C library could."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


__all__ = ["release_free_memory"]
