"""Give memory back to the system after a large job.

A resolution run or a segment computation allocates hundreds of MB (DuckDB results, pandas frames) and frees
them when it ends; glibc keeps most freed memory in its arenas, so without this the server's RSS only ever
grows to the largest job seen, run after run. ``release()`` collects what only the cycle collector can free,
then asks glibc to return free pages (``malloc_trim``); elsewhere it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache


@cache
def _trim() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


@cache
def _mallopt() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def configure() -> None:
    """For a long-running process (``cdp serve``, its ingest writer), before its threads start: allocations of
    256 KB and more (pandas and NumPy buffers, DuckDB results, request bodies) are mapped and unmapped on their
    own, and at most four malloc arenas. glibc otherwise raises its mapping threshold after the first large free
    (up to 32 MB), so later large buffers come from the arenas, and one arena a thread, where the gaps they leave
    are rarely given back: the server's RSS rose with every resolution and segment run."""
    mallopt = _mallopt()
    if mallopt is None:
        return
    mallopt(M_MMAP_THRESHOLD, 256 * 1024)  # type: ignore[operator]
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024)  # type: ignore[operator]
    mallopt(M_ARENA_MAX, 4)  # type: ignore[operator]


def release() -> None:
    gc.collect()
    trim = _trim()
    if trim is not None:
        trim(0)  # type: ignore[operator]
