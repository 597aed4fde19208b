"""Writing a segment run: the membership diff, the enter/exit rows, the history row and the outbox rows, in the
caller's SQLite transaction (a crash never leaves membership and notifications out of step); and memberships
following identity merges. SQLite only: the ingest writer process imports this without DuckDB.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdp import outbox
from cdp.chunks import chunked, marks
from cdp.privacy import consent
from cdp.timeutil import format_ts, utcnow


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
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


_SEP = "\n"  # joins sorted profile ids (ids are checked not to contain it)


@dataclass(frozen=True)
class MemberList:
    """A segment's members as their ids, sorted and joined by newlines: cheap to hand over between processes
    and to compare with the stored members as one string (``group_concat`` in SQLite)."""

    count: int
    text: str

    def ids(self) -> list[str]:
        return self.text.split(_SEP) if self.count else []


def stored_members(conn: sqlite3.Connection, key: str) -> tuple[int, str | None]:
    """How many members the segment has stored and, when no id contains a newline, their ids joined by newlines
    in the primary key's (profile id) order."""
    count, text = conn.execute(
        "SELECT count(*), group_concat(profile_id, char(10)) FROM memberships WHERE segment_key = ?", (key,)
    ).fetchone()
    text = text or ""
    if count and text.count(_SEP) != count - 1:
        return count, None
    return count, text


def write_run(
    conn: sqlite3.Connection,
    segment: dict[str, Any],
    members: set[str] | MemberList,
    trigger: str,
    started: float,
    started_at: str,
    scope: list[str] | None,
    note: str | None = None,
) -> RunResult:
    key = segment["key"]
    now = format_ts(utcnow())
    duration = int((time.perf_counter() - started) * 1000)
    if isinstance(members, MemberList) and scope is None and not consent.required(segment):
        # The stored members as one string: when it equals the new one nothing changed, and no id needs to
        # become a Python object (the usual scheduled run).
        count, text = stored_members(conn, key)
        if (count, text) == (members.count, members.text):
            run_id = insert_run(conn, key, trigger, started_at, now, duration, "succeeded", count, 0, 0, None, note)
            return RunResult(key, run_id, "succeeded", count, 0, 0, duration, note=note)
        current = _current(conn, key, None) if text is None else set(text.split(_SEP) if count else ())
    else:
        current = _current(conn, key, scope)
    wanted = set(members.ids()) if isinstance(members, MemberList) else members
    if scope is not None:
        wanted &= set(scope)
    required = consent.required(segment)
    if required:  # members must have granted these consent categories: the others leave or never enter
        wanted = consent.allowed(conn, required, wanted)
    # Only live profiles can be members (a profile merged away meanwhile is not).
    entering = _live(conn, sorted(wanted - current))
    leaving = sorted(current - wanted)
    conn.executemany(
        "INSERT OR IGNORE INTO memberships (segment_key, profile_id, entered_at) VALUES (?, ?, ?)",
        [(key, pid, now) for pid in entering],
    )
    conn.executemany(
        "DELETE FROM memberships WHERE segment_key = ? AND profile_id = ?", [(key, pid) for pid in leaving]
    )
    size = conn.execute("SELECT count(*) FROM memberships WHERE segment_key = ?", (key,)).fetchone()[0]
    run_id = insert_run(
        conn, key, trigger, started_at, now, duration, "succeeded", size, len(entering), len(leaving), None, note
    )
    changes = [(run_id, key, pid, "entered", now) for pid in entering]
    changes += [(run_id, key, pid, "exited", now) for pid in leaving]
    conn.executemany(
        "INSERT INTO membership_changes (run_id, segment_key, profile_id, change, at) VALUES (?, ?, ?, ?, ?)",
        changes,
    )
    outbox.write_segment_changes(conn, segment, run_id, entering, leaving, now)
    return RunResult(key, run_id, "succeeded", size, len(entering), len(leaving), duration, note=note)


def _current(conn: sqlite3.Connection, key: str, scope: list[str] | None) -> set[str]:
    if scope is None:
        return {r[0] for r in conn.execute("SELECT profile_id FROM memberships WHERE segment_key = ?", (key,))}
    found: set[str] = set()
    for part in chunked(scope):
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT profile_id FROM memberships WHERE segment_key = ? AND profile_id IN ({marks(part)})",
                [key, *part],
            )
        )
    return found


def _live(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
    live: list[str] = []
    for part in chunked(ids):
        live += [
            r[0]
            for r in conn.execute(f"SELECT id FROM profiles WHERE id IN ({marks(part)}) AND merged_into IS NULL", part)
        ]
    return sorted(live)


def insert_run(
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
    note: str | None = None,
) -> int:
    cursor = conn.execute(
        "INSERT INTO segment_runs (segment_key, trigger, started_at, finished_at, duration_ms, status, size, entered,"
        " exited, error, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key, trigger, started_at, finished_at, duration, status, size, entered, exited, error, note),
    )
    return int(cursor.lastrowid or 0)


def follow_merges(conn: sqlite3.Connection, merges: Sequence[tuple[str, str]]) -> None:
    """Memberships follow the survivor of each (survivor, gone) merge, keeping the earliest entry. A merged-away
    profile is never another merge's survivor. (Subscribers hear of the merges through ``cdp.outbox``.)"""
    if not merges or conn.execute("SELECT 1 FROM memberships LIMIT 1").fetchone() is None:
        return
    conn.executemany(
        "UPDATE memberships SET entered_at = min(entered_at, (SELECT m.entered_at FROM memberships m"
        " WHERE m.segment_key = memberships.segment_key AND m.profile_id = ?))"
        " WHERE profile_id = ? AND segment_key IN (SELECT segment_key FROM memberships WHERE profile_id = ?)",
        [(gone, survivor, gone) for survivor, gone in merges],
    )
    conn.executemany("UPDATE OR IGNORE memberships SET profile_id = ? WHERE profile_id = ?", merges)
    conn.executemany("DELETE FROM memberships WHERE profile_id = ?", [(gone,) for _, gone in merges])
