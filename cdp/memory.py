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


def release() -> None:
    gc.collect()
    trim = _trim()
    if trim is not None:
        trim(0)  # type: ignore[operator]
