"""What keeps the WAL and the server's memory bounded while it runs.

- Identity resolution reads in short statements (ranges of ids), so no read snapshot grows with the store:
  SQLite cannot restart the WAL past a reader's snapshot, and one statement over all events held one for the
  whole read while ingest kept writing. Measured in SQLite VM steps of the longest statement (deterministic).
- Read connections of threads that ended are closed, and each has a small page cache of its own.
- A long-running process (``cdp.memory.configure``) maps large buffers on their own, so freeing them gives the
  memory back (glibc's default keeps it once a large buffer was freed).
"""

from __future__ import annotations

import platform
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cdp import CDP, Settings
from cdp.identity import refresh
from cdp.identity.refresh import TraitRefresh
from cdp.store import Store

STEPS = 200  # VM instructions between two progress callbacks


def _glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


def fill(cdp: CDP, users: int, events_each: int, start: int = 0) -> None:
    key = cdp.keys.create("write", "fill")[1]
    """``users`` identified users, each with an identify and ``events_each`` orders, through the ingest API."""
    for first in range(start, start + users, 50):
        batch = []
        for u in range(first, min(first + 50, start + users)):
            batch.append({"type": "identify", "userId": f"u{u}", "traits": {"email": f"u{u}@example.com"}})
            batch += [
                {"type": "track", "userId": f"u{u}", "event": "Order Completed", "properties": {"revenue": n}}
                for n in range(events_each)
            ]
        cdp.ingest.batch({"batch": batch}, write_key=key)


def longest_statement(conn: sqlite3.Connection, work: Callable[[], object]) -> int:
    """The most VM steps (in units of ``STEPS``) any one statement on ``conn`` took while ``work`` ran: how long
    a read snapshot was held (each statement of an autocommit connection is its own read transaction)."""
    longest = current = 0

    def started(sql: str) -> None:
        nonlocal current
        current = 0

    def step() -> int:
        nonlocal current, longest
        current += 1
        longest = max(longest, current)
        return 0

    conn.set_trace_callback(started)
    conn.set_progress_handler(step, STEPS)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_trace_callback(None)
    return longest


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranges small enough that a test-sized store spans many (the defaults: 2,000 profiles, 50,000 rows)."""
    monkeypatch.setattr(refresh, "READ_PROFILES", 20)
    monkeypatch.setattr(refresh, "READ_ROWS", 200)


def test_resolution_reads_hold_no_snapshot_that_grows_with_the_store(fresh_db: CDP, small_ranges: None) -> None:
    conn = fresh_db.store.reader()

    def dense_refresh() -> None:  # every profile stale: the one-pass (dense) read of records, events, aggregates
        fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL"))
        assert TraitRefresh(fresh_db.store, fresh_db.settings).run(chunk=10, dense_chunk=50) == count_live()

    def count_live() -> int:
        return int(conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0])

    def match_rows() -> None:
        rows = fresh_db.identity.match_rows()
        assert len(rows) == count_live()  # one row per identified user's latest traits

    fill(fresh_db, 60, 10)
    small = {name: longest_statement(conn, work) for name, work in (("rows", match_rows), ("refresh", dense_refresh))}
    fill(fresh_db, 180, 10, start=60)  # four times the store
    large = {name: longest_statement(conn, work) for name, work in (("rows", match_rows), ("refresh", dense_refresh))}
    for name in small:
        assert small[name] > 0
        # One statement over the whole table took about four times as long in the larger store.
        assert large[name] <= small[name] * 1.5, (name, small[name], large[name])


def test_dense_refresh_reads_every_profile_across_ranges(fresh_db: CDP, small_ranges: None) -> None:
    fill(fresh_db, 45, 3)
    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL, computed = '{}'"))
    assert TraitRefresh(fresh_db.store, fresh_db.settings).run(chunk=5, dense_chunk=10) == 45
    rows = fresh_db.store.query("SELECT traits, computed FROM profiles WHERE merged_into IS NULL")
    assert len(rows) == 45
    assert all('"order_count":3' in r["computed"] and '"total_revenue":3.0' in r["computed"] for r in rows)
    assert all('"email":"u' in r["traits"] for r in rows)


def test_match_rows_keeps_each_users_latest_traits_across_ranges(fresh_db: CDP, small_ranges: None) -> None:
    fill(fresh_db, 30, 12)  # 390 events: two ranges of 200 ids
    key = fresh_db.keys.create("write", "late")[1]
    late = {"type": "identify", "userId": "u0", "traits": {"email": "new@example.com"}}
    fresh_db.ingest.batch({"batch": [late]}, write_key=key)
    rows = fresh_db.identity.match_rows().set_index("unique_id")
    assert len(rows) == 30
    assert rows.loc["user_id:u0", "email"] == "new@example.com"
    assert rows.loc["user_id:u29", "email"] == "u29@example.com"


# -- readers ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def test_a_threads_reader_is_closed_when_the_thread_ends(store: Store) -> None:
    seen: list[sqlite3.Connection] = []

    def read() -> None:
        conn = store.reader()
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        seen.append(conn)

    before = store.reader_count()
    for _ in range(5):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    assert store.reader_count() == before  # not one connection (and page cache) left per finished thread
    assert len({id(c) for c in seen}) == 5
    for conn in seen:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_readers_of_live_threads_stay_open_and_close_with_the_store(settings: Settings, tmp_path: Path) -> None:
    store = Store(settings)
    store.migrate()
    conn = store.reader()
    assert store.reader() is conn  # one per thread, reused
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -Store.READER_CACHE_KIB
    assert store.reader_count() == 1
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")


# -- large buffers ----------------------------------------------------------------------------------------

FREE_BUFFERS = """
import sys
from pathlib import Path
from cdp import memory

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "configured":
    memory.configure()
big = bytearray(8 << 20)
del big  # glibc raises its mapping threshold after freeing one mapped buffer (to 8 MB here)
buffers = [bytearray(1 << 20) for _ in range(100)]  # a job's working set, 100 MB in 1 MB buffers
kept = [bytearray(64) for _ in range(1000)]  # small objects that outlive the job
before = rss()
del buffers
print(round(before - rss()))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or not _glibc(), reason="glibc's malloc on Linux")
def test_a_configured_process_gives_large_buffers_back_when_freed(tmp_path: Path) -> None:
    script = tmp_path / "free_buffers.py"
    script.write_text(FREE_BUFFERS)
    freed = {
        mode: int(
            subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("default", "configured")
    }
    assert freed["configured"] >= 90  # MB: each 1 MB buffer was mapped on its own and unmapped when freed
    assert freed["default"] < 50  # glibc's default kept them in its heap (what made the server's RSS climb)
