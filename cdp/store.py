"""The SQLite system of record: connections, pragmas, and one writer thread with group commit.

Reads use one connection per thread (WAL lets them run beside the writer), closed when its thread ends, with a
small page cache of its own (the operating system's file cache is shared by all of them). Every write goes
through :meth:`Store.write` / :meth:`Store.submit`: a job is a function of a connection, run by
the single writer thread inside a transaction that may hold several jobs (group commit), each
under its own SAVEPOINT so one failing job rolls back alone. A job's result is only handed
back after COMMIT, so anything acknowledged to a client is on disk.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from cdp import bulk_indexes, migrations
from cdp.errors import StoreClosed, StoreUnavailable
from cdp.hooks import Hook
from cdp.settings import Settings

T = TypeVar("T")
log = logging.getLogger("cdp.store")
_STORAGE_FAILURE = re.compile(r"readonly|read-only|disk|I/O|full|unable to open")
_OPENED: set[Path] = set()  # every store file this process opened (checkpointed when a CLI command ends)
Job = Callable[[sqlite3.Connection], Any]


def _null(value: None) -> None:
    return value


# Python's sqlite3 binds str, int, float and bytes directly but sends every other parameter, None
# included, through its adapter protocol, which looks for __adapt__ and __conform__ and builds (then
# discards) two AttributeErrors: about 3,000 instructions per NULL, six or more NULL columns per
# event. A registered adapter for None is found by one dict lookup; NULL is bound as before.
sqlite3.register_adapter(type(None), _null)


class Store:
    CHECKPOINT_SECONDS = 1.0  # a PASSIVE checkpoint at least this often
    CHECKPOINT_POLL_SECONDS = 0.25  # how often the checkpointer looks at the WAL's size (a stat call)
    AUTOCHECKPOINT_PAGES = 65_536
    # The WAL is folded back and cut to zero once it passes this (readers that never pause would otherwise keep
    # a PASSIVE checkpoint from ever restarting it), and SQLite trims it to JOURNAL_LIMIT whenever it restarts.
    TRUNCATE_BYTES = 8 * 1024 * 1024
    JOURNAL_LIMIT = 64 * 1024 * 1024
    TRUNCATE_WAIT_MS = 2000  # how long a truncating checkpoint may hold writers back, waiting for readers
    # A read connection's private page cache. The server has dozens of threads (a request pool, the scheduler's,
    # the dispatcher...), each with its own reader: at the writer's 64 MB each, a store that grew filled one per
    # thread that scanned it, and RSS climbed with the store (399 -> 703 MB in a 10-minute soak). Reads of
    # pages in the operating system's file cache cost a copy, not a disk access.
    READER_CACHE_KIB = 8 * 1024

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = Path(settings.db)
        if str(self.path) != ":memory:":
            check_location(self.path, create=settings.create_dirs)
            _OPENED.add(self.path.resolve())
        self._local = threading.local()
        self._all_readers: set[sqlite3.Connection] = set()
        self._readers_lock = threading.RLock()  # a reader may be forgotten (its thread ended) while it is held
        self._queue: queue.SimpleQueue[tuple[Job, Future[Any]] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_wake = threading.Event()
        self._checkpoint_done = threading.Condition()
        self._checkpoints = 0  # checkpoint attempts finished by the checkpointer thread
        self._writer_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._job_state = threading.local()
        self.write_error: str | None = None  # the last failure to write the store (None once a write succeeds)
        self._logged_failure_at = -60.0
        # Called (in the writer thread, inside its transaction, with its connection) when another
        # connection or process changed the database since this writer's last transaction.
        self.external_change: Hook[[sqlite3.Connection]] = Hook("store.external_change")
        # True in the server, where another process (the ingest writer) writes to this store while it runs: bulk
        # writers then keep their transactions small and let the WAL be cut between them (`relieve_wal`). Not
        # read off PRAGMA data_version: the checkpointer's truncation of the WAL changes it too.
        self.shared = False
        with closing(self._open()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    # -- connections -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """The first connection: a store that cannot be opened or written is one clear StoreUnavailable."""
        try:
            conn = self._connect()
            if str(self.path) != ":memory:":
                conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails at once on a read-only file
                conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(describe_failure(self.path, exc), {"path": str(self.path)}) from exc
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.execute(f"PRAGMA journal_size_limit={self.JOURNAL_LIMIT}")
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
        holder: _Reader | None = getattr(self._local, "reader", None)
        if holder is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA cache_size=-{self.READER_CACHE_KIB}")
            holder = self._local.reader = _Reader(conn, self)
            with self._readers_lock:
                self._all_readers.add(conn)
        return holder.conn

    def reader_count(self) -> int:
        """Read connections open now (one per live thread that read)."""
        with self._readers_lock:
            return len(self._all_readers)

    def _forget_reader(self, conn: sqlite3.Connection) -> None:
        """A reader's thread ended: close its connection (unless the store closed it already)."""
        with self._readers_lock:
            if conn not in self._all_readers:
                return
            self._all_readers.discard(conn)
        conn.close()

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cursor = self.reader().execute(sql, params)
        columns = [d[0] for d in cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def migrate(self) -> list[migrations.Migration]:
        """Apply the migrations not yet applied; then build again any index a bulk write set aside and
        did not restore (a process killed meanwhile: `cdp.bulk_indexes`)."""
        with closing(self._connect()) as conn:
            done = migrations.apply(conn)
            if bulk_indexes.recorded(conn):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    restored = bulk_indexes.restore(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                log.warning("built again %d index(es) that an interrupted bulk write had set aside", restored)
            return done

    def checkpoint(self, mode: str = "TRUNCATE") -> tuple[int, int, int]:
        """Fold the WAL into the database file (TRUNCATE: and cut the WAL to zero bytes).

        Returns SQLite's (busy, wal pages, pages checkpointed); busy is 1 when readers or a writer kept it
        from finishing.
        """
        with closing(self._connect()) as conn:
            row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def probe_write(self) -> str | None:
        """None if this process can write the store now; else why not, in one line (also logged).

        Takes the write lock and changes the header inside a transaction it rolls back: nothing is written. A
        store busy with another writer counts as writable.
        """
        if str(self.path) == ":memory:":
            return None
        if not os.access(self.path, os.R_OK | os.W_OK):  # SQLite may reuse a descriptor opened before the change
            reason = f"the store {self.path} is read-only (or unreadable) for this user"
            self.note_write_failure(reason)
            return reason
        try:
            with closing(self._connect()) as conn:
                conn.execute("PRAGMA busy_timeout=0")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"PRAGMA user_version={int(version)}")
                finally:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return None
            reason = describe_failure(self.path, exc)
            self.note_write_failure(reason)
            return reason
        self.write_error = None
        return None

    def note_write_failure(self, reason: str) -> None:
        """Remember (for /healthz) and log a failure to write the store; logged once a minute at most."""
        self.write_error = reason
        now = time.monotonic()
        if now - self._logged_failure_at >= 60:
            self._logged_failure_at = now
            log.error("cdp cannot write its store: %s", reason)

    def relieve_wal(self, timeout: float = 3.0) -> bool:
        """For bulk writers, between two transactions: while the WAL is larger than ``TRUNCATE_BYTES``, wake the
        checkpointer and wait for its attempts to fold the log back and cut it (``timeout`` seconds at most: a
        long reader may hold the log). Pacing a long series of write transactions this way keeps the WAL bounded
        while ingest also writes. True if the WAL is below the size now."""
        deadline = time.monotonic() + timeout
        while self.wal_bytes() > self.TRUNCATE_BYTES:
            checkpointer = self._checkpointer
            left = deadline - time.monotonic()
            if checkpointer is None or not checkpointer.is_alive() or left <= 0 or self._stop.is_set():
                return False
            self._await_checkpoint(left)
        return True

    def _await_checkpoint(self, timeout: float) -> None:
        """Wake the checkpointer and wait until it has finished one more attempt (or ``timeout``)."""
        with self._checkpoint_done:
            seen = self._checkpoints
            self._checkpoint_wake.set()
            self._checkpoint_done.wait_for(lambda: self._checkpoints > seen or self._stop.is_set(), timeout)

    def wal_bytes(self) -> int:
        """The size of the WAL file beside the database (0 when there is none)."""
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except OSError:
            return 0

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
        commit crosses the threshold. Doing it here keeps ingest latency flat. The WAL's size is looked at
        every ``CHECKPOINT_POLL_SECONDS`` (or at once when `relieve_wal` asks): under sustained ingest it
        grows by 10-20 MB a second, so a truncation that a reader kept from finishing is tried again promptly.
        """
        conn = self._connect()
        conn.execute(f"PRAGMA busy_timeout={self.TRUNCATE_WAIT_MS}")
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                asked = self._checkpoint_wake.wait(self.CHECKPOINT_POLL_SECONDS)
                self._checkpoint_wake.clear()
                if self._stop.is_set():
                    break
                big = self.wal_bytes() > self.TRUNCATE_BYTES
                if not (big or asked) and time.monotonic() - last < self.CHECKPOINT_SECONDS:
                    continue
                last = time.monotonic()
                try:
                    conn.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if big else 'PASSIVE'})").fetchall()
                except sqlite3.Error:  # busy, or the disk refused: next time
                    pass
                finally:
                    with self._checkpoint_done:
                        self._checkpoints += 1
                        self._checkpoint_done.notify_all()
        finally:
            conn.close()
            with self._checkpoint_done:
                self._checkpoint_done.notify_all()

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
            self.note_write_failure(describe_failure(self.path, exc))
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
                if isinstance(exc, sqlite3.OperationalError) and _STORAGE_FAILURE.search(str(exc)):
                    self.note_write_failure(describe_failure(self.path, exc))
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
            self.note_write_failure(describe_failure(self.path, exc))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for future, _ in done:
                future.set_exception(exc)
            return
        self.write_error = None
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
        self._checkpoint_wake.set()
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        with self._readers_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()
        if str(self.path) != ":memory:":
            # At rest the database file alone is the whole store (a copy of it is a backup; no -wal needed).
            try:
                self.checkpoint("TRUNCATE")
            except sqlite3.Error as exc:
                log.warning("could not fold the WAL into %s at close: %s", self.path, exc)


class _Reader:
    """A thread's read connection, closed when the thread ends (its thread-local storage is dropped then)."""

    __slots__ = ("conn", "store")

    def __init__(self, conn: sqlite3.Connection, store: Store) -> None:
        self.conn = conn
        self.store = store

    def __del__(self) -> None:
        self.store._forget_reader(self.conn)


def check_location(path: Path, *, create: bool) -> None:
    """Refuse, in one sentence, a store whose directory is missing (unless ``create``) or cannot be written."""
    parent = path.parent
    if not parent.exists():
        if not create:
            raise StoreUnavailable(
                f"the directory {parent} does not exist; create it (or run `cdp migrate --create`, "
                "or set CDP_CREATE_DIRS=true)",
                {"path": str(path)},
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory {parent}: {exc.strerror}", {"path": str(path)}
            ) from exc
    if not parent.is_dir():
        raise StoreUnavailable(f"{parent} is not a directory", {"path": str(path)})
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreUnavailable(f"the store {path} is read-only (or unreadable) for this user", {"path": str(path)})
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreUnavailable(
            f"the directory {parent} is not writable: SQLite needs to create {path.name}-wal and -shm beside the store",
            {"path": str(path)},
        )


def describe_failure(path: Path, exc: sqlite3.Error) -> str:
    """One line for a store that SQLite would not open or write."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return f"the store {path} is read-only: {text}"
    if "unable to open" in text:
        return f"cannot open the store {path}: {text} (check the path and its permissions)"
    if "not a database" in text:
        return f"{path} is not a cdp store (SQLite says: {text})"
    if getattr(exc, "sqlite_errorcode", None) == errno.ENOSPC or "full" in text:
        return f"the disk holding {path} is full: {text}"
    return f"cannot use the store {path}: {text}"


def checkpoint_opened_stores() -> None:
    """Fold the WAL of every store this process opened into its database file and cut the WAL to zero."""
    for path in sorted(_OPENED):
        if not Path(f"{path}-wal").exists():
            continue
        try:
            with closing(sqlite3.connect(path, timeout=5)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("could not fold the WAL into %s: %s", path, exc)
