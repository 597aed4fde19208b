"""The SQLite system of record: connections, pragmas, and one writer thread with group commit.

Reads use one connection per thread (WAL lets them run beside the writer). Every write goes
through :meth:`Store.write` / :meth:`Store.submit`: a job is a function of a connection, run by
the single writer thread inside a transaction that may hold several jobs (group commit), each
under its own SAVEPOINT so one failing job rolls back alone. A job's result is only handed
back after COMMIT, so anything acknowledged to a client is on disk.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from cdp import migrations
from cdp.errors import StoreClosed
from cdp.hooks import Hook
from cdp.settings import Settings

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


def _null(value: None) -> None:
    return value


# Python's sqlite3 binds str, int, float and bytes directly but sends every other parameter, None
# included, through its adapter protocol, which looks for __adapt__ and __conform__ and builds (then
# discards) two AttributeErrors: about 3,000 instructions per NULL, six or more NULL columns per
# event. A registered adapter for None is found by one dict lookup; NULL is bound as before.
sqlite3.register_adapter(type(None), _null)


class Store:
    CHECKPOINT_SECONDS = 1.0
    AUTOCHECKPOINT_PAGES = 65_536

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = Path(settings.db)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[Job, Future[Any]] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._job_state = threading.local()
        # Called (in the writer thread, inside its transaction, with its connection) when another
        # connection or process changed the database since this writer's last transaction.
        self.external_change: Hook[[sqlite3.Connection]] = Hook("store.external_change")
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    # -- connections -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.execute(f"PRAGMA busy_timeout={int(self.settings.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous={self.settings.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA secure_delete=ON")  # deleted or overwritten values leave no copy in free space
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit: each statement sees the latest commit)."""
        if self._closed:
            raise StoreClosed("the store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._all_readers.append(conn)
        return conn

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.reader().execute(sql, params)
        columns = [d[0] for d in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def migrate(self) -> list[migrations.Migration]:
        with self._connect() as conn:
            return migrations.apply(conn)

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, job: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue a write job; the future resolves after the transaction holding it committed."""
        if self._closed:
            raise StoreClosed("the store is closed; no more writes are accepted")
        future: Future[T] = Future()
        if threading.current_thread() is self._writer:
            raise RuntimeError("a write job cannot submit another write job; call it directly")
        self._ensure_writer()
        self._queue.put((job, future))
        return future

    def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(job).result()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """From inside a write job: run ``callback`` once the transaction holding the job committed.

        Use it to publish in-memory caches only when the rows behind them are durable; a job that
        fails, or a group whose COMMIT fails, drops its callbacks.
        """
        callbacks: list[Callable[[], None]] | None = getattr(self._job_state, "callbacks", None)
        if callbacks is None:
            raise RuntimeError("after_commit can only be called from inside a write job")
        callbacks.append(callback)

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None:
                thread = threading.Thread(target=self._run_writer, name="cdp-writer", daemon=True)
                thread.start()
                self._writer = thread
                self._checkpointer = threading.Thread(target=self._run_checkpointer, name="cdp-checkpoint", daemon=True)
                self._checkpointer.start()

    def _run_checkpointer(self) -> None:
        """Fold the WAL into the database off the writer's path.

        Commits in WAL mode with synchronous=NORMAL only append to the log; the expensive part (copying
        pages back and fsync) is the checkpoint, which SQLite would otherwise run inside whichever
        commit crosses the threshold. Doing it here keeps ingest latency flat.
        """
        conn = self._connect()
        try:
            while not self._stop.wait(self.CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.OperationalError:  # busy: next time
                    continue
        finally:
            conn.close()

    def _run_writer(self) -> None:
        conn = self._connect()
        # The checkpointer thread does this work; this only bounds the log if it falls behind.
        conn.execute(f"PRAGMA wal_autocheckpoint={self.AUTOCHECKPOINT_PAGES}")
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                jobs = [item]
                stop = False
                while len(jobs) < self.settings.write_batch_max:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    jobs.append(more)
                self._run_group(conn, jobs)
                if stop:
                    return
        finally:
            conn.close()

    def _run_group(self, conn: sqlite3.Connection, jobs: list[tuple[Job, Future[Any]]]) -> None:
        done: list[tuple[Future[Any], Any]] = []
        callbacks: list[Callable[[], None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for _, future in jobs:
                future.set_exception(exc)
            return
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self.external_change(conn)
        # A lone job needs no savepoint: rolling back the transaction is the same thing.
        savepoints = len(jobs) > 1
        for job, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            if savepoints:
                conn.execute("SAVEPOINT job")
            self._job_state.callbacks = []
            try:
                result = job(conn)
            except BaseException as exc:  # the job's own error goes back to its caller
                if savepoints:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                elif conn.in_transaction:
                    conn.execute("ROLLBACK")
                future.set_exception(exc)
                continue
            finally:
                job_callbacks, self._job_state.callbacks = self._job_state.callbacks, None
            if savepoints:
                conn.execute("RELEASE job")
            done.append((future, result))
            callbacks += job_callbacks
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for future, _ in done:
                future.set_exception(exc)
            return
        for callback in callbacks:
            callback()
        for future, result in done:
            future.set_result(result)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A private write connection for long maintenance work (migrations, bulk tools)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        with self._readers_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()
