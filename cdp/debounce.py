"""A background thread that runs a function after a burst of work has gone quiet (debounced)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cdp")


class Debouncer:
    """``poke()`` says there is work; ``flush()`` runs once ``delay`` seconds pass without another poke,
    or ``max_wait`` seconds after the first, on a daemon thread named ``name``."""

    def __init__(self, name: str, flush: Callable[[], Any], delay: float = 0.5, max_wait: float = 2.0) -> None:
        self.name = name
        self.flush = flush
        self.delay = delay
        self.max_wait = max_wait
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            first = time.monotonic()
            while not self._stop.is_set():
                self._wake.clear()
                if not self._wake.wait(self.delay) or time.monotonic() - first > self.max_wait:
                    break
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # logged; the scheduled jobs catch up with whatever this missed
                log.exception("%s failed", self.name)
