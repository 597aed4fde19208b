"""What keeps bulk writes from swelling the WAL while ingest writes too (issue 16, the soak's WAL target).

- A trait refresh writes in transactions of a bounded number of profiles, and only rows that changed.
- Refreshes of one store run one at a time (real-time segments, segment runs and resolution all ask for one).
- Between two such transactions ``Store.relieve_wal`` has the checkpointer fold the WAL back and cut it at once,
  and cuts it as soon as a reader that held it back has finished.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from cdp import CDP, Settings
from cdp.identity import refresh
from cdp.identity.refresh import TraitRefresh, refresh_lock
from cdp.memwatch import MemoryWatch, sqlite_mb
from cdp.segments import rules
from cdp.store import Store
from cdp.timeutil import utcnow
from tests.test_bounded_reads import fill


def stale_all(cdp: CDP) -> None:
    cdp.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL, computed = '{}'"))


def test_refresh_commits_in_bounded_transactions(fresh_db: CDP) -> None:
    fill(fresh_db, 45, 3)
    stale_all(fresh_db)
    dense = TraitRefresh(fresh_db.store, fresh_db.settings, write_profiles=7)
    assert dense.run(chunk=5, dense_chunk=20) == 45  # most profiles stale: the one-pass read, chunks of 20
    assert dense.written and max(dense.written) <= 7
    assert sum(dense.written) == 45
    assert len(dense.written) >= 7  # 20 + 20 + 5 profiles, each chunk in transactions of 7 at most
    rows = fresh_db.store.query("SELECT computed FROM profiles WHERE merged_into IS NULL")
    assert all(orjson.loads(r["computed"])["order_count"] == 3 for r in rows)

    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL WHERE rowid % 9 = 0"))
    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET computed = '{}' WHERE rowid % 9 = 0"))
    sparse = TraitRefresh(fresh_db.store, fresh_db.settings, write_profiles=2)
    assert sparse.run(chunk=4, dense_chunk=20) == 5  # few stale: chunks of 4 ids, written 2 at a time
    assert sparse.written and max(sparse.written) <= 2
    assert sum(sparse.written) == 5


def test_refresh_writes_only_rows_that_changed(fresh_db: CDP) -> None:
    fill(fresh_db, 12, 2)
    first = TraitRefresh(fresh_db.store, fresh_db.settings)
    first.run()
    before = {r["id"]: r for r in fresh_db.store.query("SELECT id, traits, computed, refreshed_at FROM profiles")}
    # Every event read again (the watermark back to 0): every profile looks stale, none has changed.
    fresh_db.store.write(lambda c: c.execute("UPDATE resolution_state SET value = '0' WHERE key = 'traits_event_id'"))
    again = TraitRefresh(fresh_db.store, fresh_db.settings)
    assert again.run() == 12
    assert sum(again.written) == 0
    after = {r["id"]: r for r in fresh_db.store.query("SELECT id, traits, computed, refreshed_at FROM profiles")}
    assert after == before

    # One more order for u0: only its computed traits change, one row is written.
    key = fresh_db.keys.create("write", "more")[1]
    order = {"type": "track", "userId": "u0", "event": "Order Completed", "properties": {"revenue": 5}}
    fresh_db.ingest.batch({"batch": [order]}, write_key=key)
    one = TraitRefresh(fresh_db.store, fresh_db.settings)
    assert one.run() == 1
    assert one.written == [1]
    now = {r["id"]: r for r in fresh_db.store.query("SELECT id, traits, computed, refreshed_at FROM profiles")}
    changed = [pid for pid in now if now[pid] != before[pid]]
    assert len(changed) == 1
    (pid,) = changed
    assert now[pid]["traits"] == before[pid]["traits"]
    assert orjson.loads(now[pid]["computed"])["order_count"] == 3

    # A profile stale by updated_at (a merge, a record) with nothing new is stamped, not rewritten.
    fresh_db.store.write(
        lambda c: c.execute("UPDATE profiles SET updated_at = '2999-01-01T00:00:00Z' WHERE id = ?", (pid,))
    )
    stamped = TraitRefresh(fresh_db.store, fresh_db.settings)
    assert stamped.run() == 1
    assert stamped.written == [1]


def test_refreshes_of_one_store_run_one_at_a_time(fresh_db: CDP) -> None:
    fill(fresh_db, 10, 1)
    stale_all(fresh_db)
    done: list[int] = []
    lock = refresh_lock(fresh_db.store)
    assert refresh_lock(fresh_db.store) is lock
    with lock:  # as if another refresh were running
        worker = threading.Thread(target=lambda: done.append(TraitRefresh(fresh_db.store, fresh_db.settings).run()))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not done  # waits for the running one
        assert fresh_db.store.query("SELECT count(*) AS n FROM profiles WHERE refreshed_at IS NULL")[0]["n"] == 10
    worker.join(timeout=60)
    assert done == [10]


def big_wal_store(path: Path) -> Store:
    store = Store(Settings(db=path))
    store.TRUNCATE_BYTES = 256 * 1024  # type: ignore[misc]  # small numbers, same policy
    store.CHECKPOINT_POLL_SECONDS = 3600  # type: ignore[misc]  # only a request wakes the checkpointer
    store.CHECKPOINT_SECONDS = 3600  # type: ignore[misc]
    store.TRUNCATE_WAIT_MS = 50  # type: ignore[misc]
    store.write(lambda conn: conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)"))
    return store


def grow(store: Store, rows: int = 40) -> None:
    store.write(lambda conn: conn.executemany("INSERT INTO t (data) VALUES (randomblob(20000))", [()] * rows))


def test_relieve_wal_cuts_the_log_at_once(tmp_path: Path) -> None:
    store = big_wal_store(tmp_path / "w.db")
    try:
        assert store.relieve_wal()  # small: nothing to do
        grow(store)
        assert store.wal_bytes() > store.TRUNCATE_BYTES  # the checkpointer sleeps for an hour
        assert store.relieve_wal()
        assert store.wal_bytes() == 0
    finally:
        store.close()


def test_relieve_wal_waits_for_readers_then_cuts(tmp_path: Path) -> None:
    store = big_wal_store(tmp_path / "w.db")
    try:
        grow(store)
        with closing(sqlite3.connect(tmp_path / "w.db", isolation_level=None)) as reader:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 40  # holds a snapshot in the WAL
            grow(store)
            assert not store.relieve_wal(timeout=0.5)  # the reader's snapshot keeps the log
            assert store.wal_bytes() > store.TRUNCATE_BYTES
            reader.execute("COMMIT")
        assert store.relieve_wal()  # the reader is gone: cut at the next attempt
        assert store.wal_bytes() == 0
        with closing(sqlite3.connect(tmp_path / "w.db")) as check:
            assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 80
    finally:
        store.close()


# -- real-time segment evaluation ------------------------------------------------------------------------


def events_for(cdp: CDP, users: int, views_each: int, orders_each: int = 2, start: int = 0) -> None:
    key = cdp.keys.create("write", "views")[1]
    for u in range(start, start + users):
        batch: list[dict[str, object]] = [
            {"type": "identify", "userId": f"u{u}", "traits": {"plan": "pro" if u % 2 else "free"}}
        ]
        batch += [
            {"type": "track", "userId": f"u{u}", "event": "Product Viewed", "properties": {"sku": f"s{n}"}}
            for n in range(views_each)
        ]
        batch += [
            {"type": "track", "userId": f"u{u}", "event": "Order Completed", "properties": {"revenue": 10 + n}}
            for n in range(orders_each)
        ]
        cdp.ingest.batch({"batch": batch}, write_key=key)


def peak_of(work: Callable[[], object]) -> tuple[int, object]:
    """The most Python memory ``work`` held at once (tracemalloc: deterministic for the same code and data)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = work()
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


def test_realtime_evaluation_reads_only_the_events_its_rule_can_match(fresh_db: CDP) -> None:
    events_for(fresh_db, 20, 5)
    events_for(fresh_db, 20, 400, start=20)  # as many others, each with a long history of views
    fresh_db.identity.refresh_traits()
    engine = fresh_db.segments.engine
    now = utcnow()
    ids = {
        r["user"]: r["profile_id"]
        for r in fresh_db.store.query("SELECT value AS user, profile_id FROM identifiers WHERE type = 'user_id'")
    }
    short, long = [ids[f"u{u}"] for u in range(20)], [ids[f"u{u}"] for u in range(20, 40)]
    plan = rules.validate_rule({"trait": "plan", "op": "eq", "value": "pro"})
    buyers = rules.validate_rule(
        {"event": "Order Completed", "within": "1d", "sum": {"property": "revenue", "op": "gte", "value": 21}}
    )
    for rule, expected in ((plan, lambda u: u % 2 == 1), (buyers, lambda u: True)):
        small, got_short = peak_of(lambda rule=rule: engine.members_python(rule, short, now))
        large, got_long = peak_of(lambda rule=rule: engine.members_python(rule, long, now))
        assert got_short == {ids[f"u{u}"] for u in range(20) if expected(u)}
        assert got_long == {ids[f"u{u}"] for u in range(20, 40) if expected(u)}
        # 80 times the events per profile, none of them one the rule can match: the same memory, give or take.
        assert large <= small * 1.5 + 64 * 1024, (rule, small, large)


def test_memory_watch_reports_sqlites_own_memory() -> None:
    before = sqlite_mb()
    assert before >= 0  # the library the sqlite3 module uses was found
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (data BLOB)")
    conn.executemany("INSERT INTO t VALUES (randomblob(4000))", [()] * 2000)  # ~8 MB of pages in its cache
    held = sqlite_mb()
    assert held - before > 6, (before, held)
    conn.close()
    assert sqlite_mb() - before < 1
    tracemalloc.start()
    try:
        assert "SQLite" in MemoryWatch(60, "test").report().splitlines()[0]
    finally:
        tracemalloc.stop()


def test_a_refresh_writes_whole_chunks_alone_and_bounded_ones_in_the_server(
    fresh_db: CDP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refresh, "WRITE_PROFILES", 3)  # the bound, at the scale of this store
    fill(fresh_db, 45, 3)
    stale_all(fresh_db)
    alone = TraitRefresh(fresh_db.store, fresh_db.settings)
    assert alone.run(chunk=5, dense_chunk=10) == 45
    assert alone.written == [10, 10, 10, 10, 5]  # no other writer: one transaction a chunk

    stale_all(fresh_db)
    fresh_db.store.shared = True  # what the server says when it starts its ingest writer process
    try:
        told = TraitRefresh(fresh_db.store, fresh_db.settings)
        assert told.run(chunk=5, dense_chunk=10) == 45
    finally:
        fresh_db.store.shared = False
    assert max(told.written) <= 3 and sum(told.written) == 45


def _named(cdp: CDP, users: int) -> None:
    """``users`` identified users with a first and last name (what the name-search indexes cover)."""
    key = cdp.keys.create("write", "named")[1]
    batch = [
        {"type": "identify", "userId": f"n{u}", "traits": {"first_name": f"Ada{u}", "last_name": f"Byron{u % 7}"}}
        for u in range(users)
    ]
    cdp.ingest.batch({"batch": batch}, write_key=key)


def _traits_indexes(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'profiles' AND sql LIKE '%traits%'"
        ).fetchall()
    )


def test_a_bulk_refresh_alone_builds_the_name_search_indexes_again(fresh_db: CDP) -> None:
    _named(fresh_db, 60)
    TraitRefresh(fresh_db.store, fresh_db.settings).run()
    indexes = _traits_indexes(fresh_db.store.reader())
    assert len(indexes) >= 3  # the name-search indexes of migration 0011
    expected = {r["id"]: r["traits"] for r in fresh_db.store.query("SELECT id, traits FROM profiles")}
    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL, traits = '{}'"))

    small = TraitRefresh(fresh_db.store, fresh_db.settings)  # 60 profiles: below the default minimum
    assert small.run() == 60
    assert not small.set_aside
    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL, traits = '{}'"))
    bulk = TraitRefresh(fresh_db.store, fresh_db.settings, set_aside_min=50)
    assert bulk.run() == 60
    assert bulk.set_aside
    conn = fresh_db.store.reader()
    assert _traits_indexes(conn) == indexes  # the same indexes, defined the same way
    assert conn.execute("SELECT count(*) FROM resolution_state WHERE key = 'set_aside_indexes'").fetchone()[0] == 0
    assert {r["id"]: r["traits"] for r in fresh_db.store.query("SELECT id, traits FROM profiles")} == expected
    plan = " ".join(
        str(row[-1])
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM profiles WHERE lower(json_extract(traits, '$.last_name')) >= 'byron3'"
            " AND lower(json_extract(traits, '$.last_name')) < 'byron4'"
        )
    )
    assert "profiles_search_last_name" in plan
    found = fresh_db.profiles.search("byron3", limit=100).data
    assert sorted(p["traits"]["first_name"] for p in found) == sorted(f"Ada{u}" for u in range(60) if u % 7 == 3)


def test_indexes_set_aside_by_a_killed_process_are_built_again_at_the_next_open(fresh_db: CDP) -> None:
    _named(fresh_db, 20)
    TraitRefresh(fresh_db.store, fresh_db.settings).run()
    indexes = _traits_indexes(fresh_db.store.reader())
    path = fresh_db.settings.db
    fresh_db.close()
    # Another process sets the indexes aside, as a bulk refresh does, and is killed (-9) before restoring them.
    script = (
        "import os, signal, sys\n"
        "from functools import partial\n"
        "from cdp import CDP, Settings, bulk_indexes\n"
        "cdp = CDP(Settings(db=sys.argv[1], scheduler_enabled=False))\n"
        "cdp.store.write(partial(bulk_indexes.set_aside, table='profiles', column='traits'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    with closing(sqlite3.connect(path)) as raw:
        assert _traits_indexes(raw) == {}
        assert raw.execute("SELECT count(*) FROM resolution_state WHERE key = 'set_aside_indexes'").fetchone()[0] == 1
    again = CDP(Settings(db=path, scheduler_enabled=False))
    try:
        conn = again.store.reader()
        assert _traits_indexes(conn) == indexes
        assert conn.execute("SELECT count(*) FROM resolution_state WHERE key = 'set_aside_indexes'").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        again.close()
