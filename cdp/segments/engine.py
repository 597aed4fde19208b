"""Evaluating segments and writing their membership changes.

Whole-segment runs compile the rule to SQL and run it in DuckDB over the SQLite store attached
read-only. Single-profile (real-time) runs use the reference evaluator over that profile's rows,
which property tests keep identical to the SQL. Either way the diff against the stored members, the
new memberships, the enter/exit rows, the run's history row and one outbox row per change are
written in ONE SQLite transaction: a crash never leaves membership and notifications out of step.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import orjson

from cdp.segments import rules
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow

_EXTENSION_LOCK = threading.Lock()
_EXTENSION_READY = False


def duckdb_over(store: Store) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store attached read-only as ``db``."""
    global _EXTENSION_READY
    with _EXTENSION_LOCK:
        if not _EXTENSION_READY:
            from duckdb_extensions import import_extension

            import_extension("sqlite_scanner")
            _EXTENSION_READY = True
    con = duckdb.connect()
    con.execute("LOAD sqlite_scanner")
    path = str(store.path).replace("'", "''")  # ATTACH takes no parameters: quote the literal
    con.execute(f"ATTACH '{path}' AS db (TYPE sqlite, READ_ONLY)")
    return con


@dataclass
class RunResult:
    segment_key: str
    run_id: int
    status: str
    size: int | None
    entered: int
    exited: int
    duration_ms: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


class Engine:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        """Never two runs of one segment at once in this process."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # -- evaluation ------------------------------------------------------------------------------

    @contextmanager
    def session(self, *, materialize: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """DuckDB views (or, for many segments at once, temp tables) over the live store."""
        con = duckdb_over(self.store)
        kind = "TABLE" if materialize else "VIEW"
        temp = "TEMP " if materialize else ""
        try:
            con.execute(
                f"CREATE {temp}{kind} events AS SELECT profile_id, type, event, timestamp, properties"
                " FROM db.events WHERE profile_id IS NOT NULL"
            )
            con.execute(
                f"CREATE {temp}{kind} profiles AS SELECT id, traits, computed FROM db.profiles"
                " WHERE merged_into IS NULL"
            )
            con.execute("CREATE VIEW memberships AS SELECT segment_key, profile_id FROM db.memberships")
            yield con
        finally:
            con.close()

    @staticmethod
    def members_sql(con: duckdb.DuckDBPyConnection, rule: rules.Rule, now: datetime) -> set[str]:
        compiled = rules.compile_rule(rule, now=now)
        return {row[0] for row in con.execute(compiled.sql, compiled.params).fetchall()}

    def members_python(self, rule: rules.Rule, profile_ids: list[str], now: datetime) -> set[str]:
        """The reference evaluator over just these profiles' rows (real-time re-evaluation)."""
        conn = self.store.reader()
        marks = ",".join("?" * len(profile_ids))
        profiles = {
            pid: {"traits": orjson.loads(traits), "computed": orjson.loads(computed)}
            for pid, traits, computed in conn.execute(
                f"SELECT id, traits, computed FROM profiles WHERE id IN ({marks}) AND merged_into IS NULL", profile_ids
            )
        }
        events = [
            {"profile_id": pid, "type": kind, "event": name, "timestamp": ts,
             "properties": orjson.loads(props) if props else None}
            for pid, kind, name, ts, props in conn.execute(
                f"SELECT profile_id, type, event, timestamp, properties FROM events WHERE profile_id IN ({marks})",
                profile_ids,
            )
        ]  # fmt: skip
        memberships: dict[str, set[str]] = {}
        for key, pid in conn.execute(
            f"SELECT segment_key, profile_id FROM memberships WHERE profile_id IN ({marks})", profile_ids
        ):
            memberships.setdefault(key, set()).add(pid)
        return rules.evaluate(rule, profiles=profiles, events=events, memberships=memberships, now=now)

    # -- writing a run ---------------------------------------------------------------------------

    def record(
        self,
        segment: dict[str, Any],
        members: set[str] | None,
        *,
        trigger: str,
        started: float,
        started_at: str,
        scope: list[str] | None = None,
        error: str | None = None,
    ) -> RunResult:
        """Diff ``members`` against the stored ones (all, or only the ``scope`` profiles) and commit."""
        key = segment["key"]

        def job(conn: sqlite3.Connection) -> RunResult:
            now = format_ts(utcnow())
            duration = int((time.perf_counter() - started) * 1000)
            if members is None:
                run_id = _insert_run(conn, key, trigger, started_at, now, duration, "failed", None, 0, 0, error)
                return RunResult(key, run_id, "failed", None, 0, 0, duration, error)
            current = _current(conn, key, scope)
            # Only live profiles can be members (a profile merged away meanwhile is not).
            entering = _live(conn, sorted(members - current))
            leaving = sorted(current - members)
            conn.executemany(
                "INSERT OR IGNORE INTO memberships (segment_key, profile_id, entered_at) VALUES (?, ?, ?)",
                [(key, pid, now) for pid in entering],
            )
            conn.executemany(
                "DELETE FROM memberships WHERE segment_key = ? AND profile_id = ?", [(key, pid) for pid in leaving]
            )
            size = conn.execute("SELECT count(*) FROM memberships WHERE segment_key = ?", (key,)).fetchone()[0]
            run_id = _insert_run(
                conn, key, trigger, started_at, now, duration, "succeeded", size, len(entering), len(leaving), None
            )
            changes = [(run_id, key, pid, "entered", now) for pid in entering]
            changes += [(run_id, key, pid, "exited", now) for pid in leaving]
            conn.executemany(
                "INSERT INTO membership_changes (run_id, segment_key, profile_id, change, at) VALUES (?, ?, ?, ?, ?)",
                changes,
            )
            write_outbox(conn, segment, run_id, entering, leaving, now)
            return RunResult(key, run_id, "succeeded", size, len(entering), len(leaving), duration)

        try:
            return self.store.write(job)
        except Exception as exc:  # the transaction rolled back: previous members stay; say so in the history
            if members is None:
                raise
            return self.record(
                segment, None, trigger=trigger, started=started, started_at=started_at,
                error=f"{type(exc).__name__}: {exc}",
            )  # fmt: skip


def _current(conn: sqlite3.Connection, key: str, scope: list[str] | None) -> set[str]:
    if scope is None:
        return {r[0] for r in conn.execute("SELECT profile_id FROM memberships WHERE segment_key = ?", (key,))}
    found: set[str] = set()
    for start in range(0, len(scope), 900):
        part = scope[start : start + 900]
        marks = ",".join("?" * len(part))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT profile_id FROM memberships WHERE segment_key = ? AND profile_id IN ({marks})", [key, *part]
            )
        )
    return found


def _live(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
    live: list[str] = []
    for start in range(0, len(ids), 900):
        part = ids[start : start + 900]
        marks = ",".join("?" * len(part))
        live += [
            r[0] for r in conn.execute(f"SELECT id FROM profiles WHERE id IN ({marks}) AND merged_into IS NULL", part)
        ]
    return sorted(live)


def _insert_run(
    conn: sqlite3.Connection,
    key: str,
    trigger: str,
    started_at: str,
    finished_at: str,
    duration: int,
    status: str,
    size: int | None,
    entered: int,
    exited: int,
    error: str | None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO segment_runs (segment_key, trigger, started_at, finished_at, duration_ms, status, size, entered,"
        " exited, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key, trigger, started_at, finished_at, duration, status, size, entered, exited, error),
    )
    return int(cursor.lastrowid or 0)


def identifiers_of(conn: sqlite3.Connection, profile_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    ids = list(profile_ids)
    out: dict[str, list[dict[str, str]]] = {pid: [] for pid in ids}
    for start in range(0, len(ids), 900):
        part = ids[start : start + 900]
        marks = ",".join("?" * len(part))
        for pid, kind, value in conn.execute(
            f"SELECT profile_id, type, value FROM identifiers WHERE profile_id IN ({marks}) ORDER BY type, value", part
        ):
            out[pid].append({"type": kind, "value": value})
    return out


def write_outbox(
    conn: sqlite3.Connection,
    segment: dict[str, Any],
    run_id: int,
    entering: list[str],
    leaving: list[str],
    now: str,
) -> None:
    if not entering and not leaving:
        return
    idents = identifiers_of(conn, [*entering, *leaving])
    rows = []
    for change, pids in (("segment.entered", entering), ("segment.exited", leaving)):
        for pid in pids:
            data = {
                "segment": {"key": segment["key"], "name": segment["name"]},
                "profile": {"id": pid, "identifiers": idents.get(pid, [])[:50]},
                "run_id": run_id,
                "entered_at" if change == "segment.entered" else "exited_at": now,
            }
            rows.append((new_message_id(), change, segment["key"], pid, orjson.dumps(data).decode(), now))
    conn.executemany(
        "INSERT INTO outbox (message_id, type, segment_key, profile_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def follow_merge(conn: sqlite3.Connection, survivor: str, gone: str) -> None:
    """Memberships follow the survivor of a merge (keeping the earliest entry); subscribers hear of it."""
    conn.execute(
        "UPDATE memberships SET entered_at = min(entered_at, (SELECT m.entered_at FROM memberships m"
        " WHERE m.segment_key = memberships.segment_key AND m.profile_id = ?))"
        " WHERE profile_id = ? AND segment_key IN (SELECT segment_key FROM memberships WHERE profile_id = ?)",
        (gone, survivor, gone),
    )
    conn.execute("UPDATE OR IGNORE memberships SET profile_id = ? WHERE profile_id = ?", (survivor, gone))
    conn.execute("DELETE FROM memberships WHERE profile_id = ?", (gone,))
    now = format_ts(utcnow())
    data = {"profile": {"id": survivor}, "merged_profile_id": gone, "merged_at": now}
    conn.execute(
        "INSERT INTO outbox (message_id, type, segment_key, profile_id, payload, created_at)"
        " VALUES (?, 'profile.merged', NULL, ?, ?, ?)",
        (new_message_id(), survivor, orjson.dumps(data).decode(), now),
    )
