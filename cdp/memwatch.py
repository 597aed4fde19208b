"""A diagnostic: where a long-running process's memory goes (``CDP_TRACEMALLOC_SECONDS``).

With ``Settings.tracemalloc_seconds`` above zero, ``cdp serve`` and its ingest writer process trace Python
allocations and log, every that many seconds, their RSS, the traced total, SQLite's own memory (page caches,
statements: native memory tracemalloc does not see), the thread count and the allocation sites that grew most
since the first report (logger ``cdp.memory``, level WARNING so it shows at the default log level).
Tracing costs CPU and memory of its own: use it to find a leak, not in production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import tracemalloc
from functools import cache
from pathlib import Path

log = logging.getLogger("cdp.memory")
FRAMES = 6
TOP = 12


def rss_mb() -> float:
    """This process's resident set size, in MB (0 where /proc is not available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@cache
def _sqlite_memory_used() -> object | None:
    """SQLite's ``sqlite3_memory_used`` from the library the ``sqlite3`` module uses (None if not found)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        used = lib.sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    return used


def sqlite_mb() -> float:
    """Memory SQLite holds in this process (page caches of every connection, statements, sorters), in MB: part of
    the native memory tracemalloc does not see (-1 where the library cannot be found)."""
    used = _sqlite_memory_used()
    return -1.0 if used is None else int(used()) / 2**20  # type: ignore[operator]


class MemoryWatch:
    """Logs the allocation sites that grew, every ``seconds``, on a daemon thread, until ``stop``."""

    def __init__(self, seconds: float, name: str) -> None:
        self.seconds = seconds
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: tracemalloc.Snapshot | None = None

    def start(self) -> MemoryWatch:
        if not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)
        self._thread = threading.Thread(target=self._run, name="cdp-memwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> str:
        """One report: RSS, traced memory, and the sites that grew most since the first report."""
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            ]
        )
        current, peak = tracemalloc.get_traced_memory()
        lines = [
            f"{self.name}: RSS {rss_mb():.1f} MB, traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f} MB),"
            f" SQLite {sqlite_mb():.1f} MB, {threading.active_count()} threads"
        ]
        if self._first is None:
            self._first = snapshot
            top = snapshot.statistics("traceback")[:TOP]
            lines += [f"  {s.size / 2**20:8.2f} MB {s.count:>8} blocks  {_where(s.traceback)}" for s in top]
        else:
            grown = snapshot.compare_to(self._first, "traceback")[:TOP]
            for d in grown:
                size = f"{d.size_diff / 2**20:+8.2f} MB ({d.size / 2**20:.2f})"
                lines.append(f"  {size} {d.count_diff:+8} blocks  {_where(d.traceback)}")
        return "\n".join(lines)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            log.warning("%s", self.report())


def _where(traceback: tracemalloc.Traceback) -> str:
    frames = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback]
    return " < ".join(reversed(frames)) if frames else "?"
