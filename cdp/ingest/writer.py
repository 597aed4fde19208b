"""The ingest writer process: validated tracking batches stored by a process of their own.

Under ``cdp serve`` one Python process would otherwise do both halves of ingest on one GIL: the
HTTP side (parsing, validation, normalisation: ~20 µs an event) and the write half (deduplication,
the identity graph, the SQLite inserts and COMMIT: ~40 µs an event, the serial part). The writer
thread gives the GIL up inside every ``sqlite3_step`` and waits to get it back behind request
threads, so the serial part slows down exactly when the load is highest. Here the write half runs
in a child process with its own store connection, identity graph and cache; the server sends it
validated batches over a socket pair, the child stores the batches that arrived together in one
transaction, and the server acknowledges a request once the child says it committed, as before.

The child is ``python -m cdp.ingest.writer`` (a fresh interpreter: no inherited threads or SQLite
handles, and only the modules the write half needs), started with the server; it ends when the
socket closes (the server stopped or died: it commits what it had queued, then exits), and is
started again if it dies: the requests in flight then fail with 503 and clients retry them
(messageId deduplication makes the retry safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from cdp.errors import WriterUnavailable
from cdp.settings import Settings

log = logging.getLogger("cdp.ingest")

# Messages, pickled: settings, then (request id, batch) or None (stop) to the child; True (ready) or
# why not, then (request id, True, what was stored) or (request id, False, why) back.
_START_TIMEOUT = 60.0


class ProcessWriter:
    """The server's side: sends batches to the child, hands each caller its own answer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()  # starting the child, sending
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self.last_error: str | None = None  # why the last batch failed (None once one is stored)
        self._logged_at = -60.0

    @staticmethod
    def usable(settings: Settings) -> bool:
        """A child needs a file both processes can open and a POSIX host (the socket is passed by fd)."""
        return str(settings.db) != ":memory:" and os.name == "posix"

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._conn is not None:
            return
        mine, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "cdp.ingest.writer", str(theirs.fileno())], pass_fds=[theirs.fileno()]
            )
        finally:
            theirs.close()
        ours = Connection(mine.detach())
        ours.send_bytes(pickle.dumps(self.settings))
        # The child says it is ready once its store is open; a child that cannot start says why.
        ready: object = None
        if ours.poll(_START_TIMEOUT):
            try:
                ready = pickle.loads(ours.recv_bytes())
            except EOFError:
                ready = f"it exited with status {process.wait()}"
        else:
            ready = "it did not answer in time"
        if ready is not True:
            process.kill()
            process.wait()
            ours.close()
            raise WriterUnavailable(f"the ingest writer process could not start: {ready}")
        self._conn, self._process = ours, process
        self._reader = threading.Thread(target=self._read, args=(ours,), name="cdp-ingest-replies", daemon=True)
        self._reader.start()

    def write(self, batch: Any) -> Any:
        return self.submit(batch).result()

    async def write_async(self, batch: Any) -> Any:
        """``write`` for the event loop: no thread waits for the child."""
        return await asyncio.wrap_future(self.submit(batch))

    def submit(self, batch: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise WriterUnavailable("the server is shutting down; no more writes are accepted")
            self._start()
            assert self._conn is not None
            request = next(self._ids)
            self._pending[request] = future
            data = pickle.dumps((request, batch), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._conn.send_bytes(data)
            except OSError as exc:
                self._pending.pop(request, None)
                self._lost(self._conn, f"sending to it failed: {exc}")
                raise WriterUnavailable("the ingest writer process stopped; retry the request") from exc
        return future

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                request, ok, value = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                with self._lock:
                    self._lost(conn, "it exited")
                return
            with self._lock:
                future = self._pending.pop(request, None)
            if future is None:
                continue
            if ok:
                self.last_error = None
                future.set_result(value)
            else:
                self._failed(str(value))
                future.set_exception(WriterUnavailable(f"the write failed and nothing was stored: {value}"))

    def _failed(self, why: str) -> None:
        """A batch the child could not store: kept for /healthz, logged once a minute at most."""
        self.last_error = why
        now = time.monotonic()
        if now - self._logged_at >= 60:
            self._logged_at = now
            log.error("the ingest writer process could not store a batch (answered 503): %s", why)

    def _lost(self, conn: Connection, why: str) -> None:
        """With the lock held: forget the child behind ``conn`` and fail what it had not answered."""
        if self._conn is not conn:
            return
        if not self._closed:
            log.error("the ingest writer process was lost (%s); it starts again with the next request", why)
        self._conn = None
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)  # reap it
        for future in self._pending.values():
            future.set_exception(WriterUnavailable("the ingest writer process stopped; retry the request"))
        self._pending.clear()
        conn.close()

    def close(self) -> None:
        """Stop the child once it has committed everything sent to it."""
        with self._lock:
            self._closed = True
            conn, process, reader = self._conn, self._process, self._reader
            if conn is not None:
                with contextlib.suppress(OSError):  # the child drains its queue and exits
                    conn.send_bytes(pickle.dumps(None))
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if reader is not None:
            reader.join(timeout=5)  # it saw the pipe close and closed our end


class _Batcher:
    """In the child: requests that arrive while a write is under way are stored together as one job
    (``store_batches``), so the per-request costs (savepoints, the deduplication query, the identity
    cache's publication, the counters' upsert, statement set-up) are paid once per transaction.
    """

    MAX_ROWS = 5_000  # a soft bound: one request of any size always goes alone

    def __init__(self, store: Any, graph: Any, answer: Any) -> None:
        from cdp.ingest.storage import store_batches

        self.store, self.graph, self.answer, self.store_batches = store, graph, answer, store_batches
        self._pending: list[tuple[int, Any]] = []
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cdp-ingest-batcher", daemon=True)
        self._thread.start()

    def add(self, request: int, batch: Any) -> None:
        with self._ready:
            self._pending.append((request, batch))
            self._ready.notify()

    def stop(self) -> None:
        """Store what has arrived, then end."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join()

    def _take(self) -> list[tuple[int, Any]] | None:
        with self._ready:
            while not self._pending and not self._stopping:
                self._ready.wait()
            if not self._pending:
                return None
            size, count = 0, 0
            for _, batch in self._pending:
                if count and size + len(batch[0]) > self.MAX_ROWS:
                    break
                size += len(batch[0])
                count += 1
            work, self._pending = self._pending[:count], self._pending[count:]
            return work

    def _write(self, batches: list[Any]) -> Any:
        job = functools.partial(self.store_batches, graph=self.graph, batches=batches)
        return self.store.submit(job).result()

    def _run(self) -> None:
        while (work := self._take()) is not None:
            try:
                results = self._write([batch for _, batch in work])
            except Exception as exc:
                if len(work) == 1:
                    self.answer(work[0][0], False, f"{type(exc).__name__}: {exc}")
                    continue
                # One request's rows broke the shared transaction: each alone, so only it fails.
                for request, batch in work:
                    try:
                        self.answer(request, True, self._write([batch])[0])
                    except Exception as alone:
                        self.answer(request, False, f"{type(alone).__name__}: {alone}")
                continue
            for (request, _), stored in zip(work, results, strict=True):
                self.answer(request, True, stored)


def _child(conn: Connection) -> None:
    """The child's main: one store, one identity graph, requests in, answers out."""
    from cdp import memory
    from cdp.store import Store
    from cdp.wiring import identity_graph

    memory.configure()
    try:
        settings: Settings = pickle.loads(conn.recv_bytes())
        store = Store(settings)
        graph = identity_graph(store, settings)
    except Exception as exc:
        conn.send_bytes(pickle.dumps(f"{type(exc).__name__}: {exc}"))
        return
    # As in `cdp serve`: what was loaded is out of the collector's sight, and a batch's rows (thousands
    # of containers alive until it is stored) do not set off young collections several times a batch.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    conn.send_bytes(pickle.dumps(True))
    if settings.tracemalloc_seconds:
        from cdp.memwatch import MemoryWatch

        MemoryWatch(settings.tracemalloc_seconds, "ingest writer").start()

    def answer(request: int, ok: bool, value: Any) -> None:  # only the batcher's thread sends
        data = pickle.dumps((request, ok, value), protocol=pickle.HIGHEST_PROTOCOL)
        with contextlib.suppress(OSError):  # the server is gone; what was committed stays committed
            conn.send_bytes(data)

    batcher = _Batcher(store, graph, answer)
    try:
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):  # the server is gone
                break
            if message is None:  # the server is stopping
                break
            batcher.add(*message)
    finally:
        batcher.stop()
        store.close()
        conn.close()


if __name__ == "__main__":
    # Ctrl+C reaches the whole process group: the server finishes its requests and then stops the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _child(Connection(int(sys.argv[1])))
