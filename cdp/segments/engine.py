"""Evaluating segments and writing their membership changes.

Whole-segment runs compile the rule to SQL and run it in DuckDB over the SQLite store attached
read-only. Single-profile (real-time) runs use the reference evaluator over that profile's rows,
which property tests keep identical to the SQL. Either way the diff against the stored members, the
new memberships, the enter/exit rows, the run's history row and one outbox row per change are
written in ONE SQLite transaction: a crash never leaves membership and notifications out of step.

DuckDB runs in a child process (``DuckDBWorker``), never in this one. DuckDB's SQLite scanner carries
its own copy of SQLite, and two copies of SQLite in one process break each other's POSIX locks: the
scanner's copy does not see this process's connections, takes itself for the only one and truncates
the WAL index (``-shm``) that the store's writer and checkpointer have mapped, which kills the process
with SIGBUS or corrupts the index. In another process, the usual cross-process locking applies.
"""

from __future__ import annotations

import pickle
import secrets
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import orjson

from cdp.ml.scores import merge_scores
from cdp.segments import rules
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow


def _sql_string(text: str) -> str:
    """A SQL string literal (quotes doubled; DuckDB's standard strings have no backslash escapes)."""
    return "'" + text.replace("'", "''") + "'"


def _attach_sql(store: Store) -> str:
    return f"ATTACH {_sql_string(str(store.path))} AS db (TYPE sqlite, READ_ONLY)"  # ATTACH takes no parameters


# The child process: runs the setup statements, then answers queries with their first column (a list) or all
# rows, until stdin closes. Frames both ways are an 8-byte little-endian length and a pickle. It imports
# nothing of cdp (quick to start) and opens the store only through DuckDB's scanner.
_WORKER_SOURCE = """
import os, pickle, struct, sys, threading

def main():
    # The pipe carries frames only: anything else writing to stdout (Python or C) goes to stderr.
    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj):
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(struct.pack("<Q", len(data)))
        out.write(data)
        out.flush()

    def recv():
        head = inp.read(8)
        if len(head) < 8:
            return None
        return pickle.loads(inp.read(struct.unpack("<Q", head)[0]))

    def failure(exc):
        return ("error", type(exc).__module__, type(exc).__name__, str(exc))

    setup = recv()
    if setup is None:
        return
    import duckdb

    def warm():  # DuckDB's first statement with parameters imports pandas (~0.4 s): do it during the setup
        try:
            duckdb.connect().execute("SELECT $1", [0]).fetchall()
        except Exception:
            pass

    warmer = threading.Thread(target=warm)
    warmer.start()
    try:
        serve(duckdb, setup, send, recv, failure)
    finally:
        warmer.join()

def serve(duckdb, setup, send, recv, failure):
    try:
        from duckdb_extensions import import_extension

        import_extension("sqlite_scanner")
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        con.execute("LOAD sqlite_scanner")
        for statement in setup:
            con.execute(statement)
    except Exception as exc:
        send(failure(exc))
        return
    send(("ready",))
    while True:
        request = recv()
        if request is None:
            return
        shape, sql, params = request
        try:
            cursor = con.execute(sql, params)
            if shape == "exec":
                send(("ok", None))
                continue
            if shape == "numpy":
                send(("ok", cursor.fetchnumpy()))
                continue
            rows = cursor.fetchall()
            send(("ok", [row[0] for row in rows] if shape == "column" else rows))
        except Exception as exc:
            send(failure(exc))

main()
"""


class DuckDBWorker:
    """A DuckDB connection in a child process, with ``execute(sql, params).fetchall()`` like DuckDB's own.

    ``setup`` statements run first (ATTACH, views, temp tables). Errors of a query are raised here with
    DuckDB's exception type and message; the session stays usable. If the child dies, every later call
    raises RuntimeError.
    """

    def __init__(self, setup: list[str]) -> None:
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            self._call(setup)
        except BaseException:
            self.close()
            raise

    def _call(self, request: object) -> Any:
        cause: Exception | None = None
        with self._lock:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None and stdout is not None
            try:
                data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.write(struct.pack("<Q", len(data)))
                stdin.write(data)
                stdin.flush()
                head = stdout.read(8)
                reply = pickle.loads(stdout.read(struct.unpack("<Q", head)[0])) if len(head) == 8 else None
            except (OSError, ValueError) as exc:
                reply, cause = None, exc
        if reply is None:
            code = self._process.poll()
            raise RuntimeError(f"the DuckDB worker process exited unexpectedly (exit code {code})") from cause
        if reply[0] == "error":
            _, module, name, message = reply
            kind = getattr(duckdb, name, None) if module.lstrip("_").startswith("duckdb") else None
            if isinstance(kind, type) and issubclass(kind, Exception):
                raise kind(message)
            raise RuntimeError(f"{name}: {message}")
        return reply[1] if len(reply) > 1 else None

    def execute(self, sql: str, params: list[Any] | None = None) -> _Rows:
        return _Rows(self._call(("rows", sql, params or [])))

    def column(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        """The first column of the answer (cheaper to hand over than rows)."""
        result: list[Any] = self._call(("column", sql, params or []))
        return result

    def numpy(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """The answer as DuckDB's ``fetchnumpy``: a dict of column name -> numpy array (masked where NULL)."""
        result: dict[str, Any] = self._call(("numpy", sql, params or []))
        return result

    def run(self, sql: str, params: list[Any] | None = None) -> None:
        """A statement whose answer is not needed."""
        self._call(("exec", sql, params or []))

    def close(self) -> None:
        process = self._process
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class _Rows:
    rows: list[tuple[Any, ...]]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


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


def new_message_ids(n: int) -> list[str]:
    """``n`` ids like ``new_message_id``'s, from one call to the system's random source."""
    raw = secrets.token_bytes(12 * n).hex()
    return ["msg_" + raw[i : i + 24] for i in range(0, 24 * n, 24)]


_SEP = "\n"  # joins sorted profile ids (ids are checked not to contain it)


@dataclass(frozen=True)
class MemberList:
    """A segment's members as their ids, sorted and joined by newlines: cheap to hand over between processes
    and to compare with the stored members as one string (``group_concat`` in SQLite)."""

    count: int
    text: str

    def ids(self) -> list[str]:
        return self.text.split(_SEP) if self.count else []


def _stored_members(conn: sqlite3.Connection, key: str) -> tuple[int, str | None]:
    """How many members the segment has stored and, when no id contains a newline, their ids joined by newlines
    in the primary key's (profile id) order."""
    count, text = conn.execute(
        "SELECT count(*), group_concat(profile_id, char(10)) FROM memberships WHERE segment_key = ?", (key,)
    ).fetchone()
    text = text or ""
    if count and text.count(_SEP) != count - 1:
        return count, None
    return count, text


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
    def session(
        self,
        *,
        materialize: bool = False,
        memberships: Iterable[str] = (),
        events: tuple[frozenset[str], frozenset[str]] | None = None,
    ) -> Iterator[DuckDBWorker]:
        """DuckDB views (or, for many segments at once, temp tables) over the live store, in a child process.

        ``memberships`` holds the stored members of the given segment keys (what ``in_segment`` reads), copied
        in from the store; ``load_memberships`` refreshes one key after its run. The SQLite scanner cannot
        read one segment's rows by the primary key (it scans the whole table), so this is much cheaper than a
        view over ``db.memberships`` once memberships run into the millions.
        """
        kind = "TABLE" if materialize else "VIEW"
        temp = "TEMP " if materialize else ""
        events_sql = (
            f"CREATE {temp}{kind} events AS SELECT profile_id, type, event, timestamp, properties"
            " FROM db.events WHERE profile_id IS NOT NULL"
        )
        if materialize and events is not None and not any("\0" in name for name in events[0]):
            # Only the events the rules can match, and their properties only where a rule reads them: copying
            # every event's JSON out of SQLite is most of a session's cost. The names go in as SQL string
            # literals: the SQLite scanner pushes an IN list of constants down into its scan (a bound list
            # parameter is not pushed down and makes the copy slower than copying everything).
            names, with_properties = events
            wanted = ", ".join(_sql_string(n) for n in sorted(names)) or "NULL"
            read = ", ".join(_sql_string(n) for n in sorted(with_properties)) or "NULL"
            events_sql = (
                "CREATE TEMP TABLE events AS SELECT profile_id, type, event, timestamp,"
                f" CASE WHEN event IN ({read}) THEN properties END AS properties"
                f" FROM db.events WHERE profile_id IS NOT NULL AND event IN ({wanted})"
            )
        con = DuckDBWorker(
            [
                _attach_sql(self.store),
                events_sql,
                # What models wrote (``scores``: propensity_<key>, persona) reads as computed traits.
                f"CREATE {temp}{kind} profiles AS SELECT id, traits, CASE WHEN scores IS NULL OR scores = '{{}}'"
                " THEN computed ELSE json_merge_patch(computed, scores) END AS computed FROM db.profiles"
                " WHERE merged_into IS NULL",
                "CREATE TEMP TABLE memberships (segment_key VARCHAR, profile_id VARCHAR)",
            ]
        )
        try:
            for key in sorted(set(memberships)):
                self.load_memberships(con, key)
            yield con
        finally:
            con.close()

    def load_memberships(self, con: DuckDBWorker, key: str) -> None:
        """Copy the segment's stored members into the session's ``memberships`` table (replacing its rows)."""
        count, text = _stored_members(self.store.reader(), key)
        con.run("DELETE FROM memberships WHERE segment_key = $1", [key])
        if not count:
            return
        if text is None:  # an id with a newline: hand the ids over as a list
            ids = [
                r[0]
                for r in self.store.reader().execute("SELECT profile_id FROM memberships WHERE segment_key = ?", (key,))
            ]
            con.run("INSERT INTO memberships SELECT $1, unnest($2::VARCHAR[])", [key, ids])
        else:
            con.run("INSERT INTO memberships SELECT $1, unnest(string_split($2, chr(10)))", [key, text])

    @staticmethod
    def members_sql(con: DuckDBWorker | duckdb.DuckDBPyConnection, rule: rules.Rule, now: datetime) -> set[str]:
        compiled = rules.compile_rule(rule, now=now)
        if isinstance(con, DuckDBWorker):
            return set(con.column(compiled.sql, compiled.params))
        return {row[0] for row in con.execute(compiled.sql, compiled.params).fetchall()}

    @staticmethod
    def members_sorted(con: DuckDBWorker, rule: rules.Rule, now: datetime) -> MemberList | set[str]:
        """Like ``members_sql``, as a ``MemberList`` built by DuckDB (one string crosses the process boundary);
        a set if some id contains a newline."""
        compiled = rules.compile_rule(rule, now=now)
        (count, text, has_sep), *_ = con.execute(
            "SELECT count(*), coalesce(string_agg(profile_id, chr(10) ORDER BY profile_id), ''),"
            f" coalesce(bool_or(contains(profile_id, chr(10))), false) FROM ({compiled.sql}) AS q(profile_id)",
            compiled.params,
        ).fetchall()
        if has_sep:
            return set(con.column(compiled.sql, compiled.params))
        return MemberList(int(count), text)

    def members_python(self, rule: rules.Rule, profile_ids: list[str], now: datetime) -> set[str]:
        """The reference evaluator over just these profiles' rows (real-time re-evaluation)."""
        conn = self.store.reader()
        marks = ",".join("?" * len(profile_ids))
        profiles = {
            pid: {"traits": orjson.loads(traits), "computed": merge_scores(orjson.loads(computed), scores)}
            for pid, traits, computed, scores in conn.execute(
                f"SELECT id, traits, computed, scores FROM profiles WHERE id IN ({marks}) AND merged_into IS NULL",
                profile_ids,
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
        members: set[str] | MemberList | None,
        *,
        trigger: str,
        started: float,
        started_at: str,
        scope: list[str] | None = None,
        error: str | None = None,
    ) -> RunResult:
        """Diff ``members`` against the stored ones (all, or only the ``scope`` profiles) and commit."""
        if members is None:
            return self.record_failure(segment, trigger=trigger, started=started, started_at=started_at, error=error)
        return self.apply([(segment, members)], trigger=trigger, started=started, started_at=started_at, scope=scope)[0]

    def apply(
        self,
        changes: list[tuple[dict[str, Any], set[str] | MemberList]],
        *,
        trigger: str,
        started: float,
        started_at: str,
        scope: list[str] | None = None,
        before: Callable[[sqlite3.Connection], None] | None = None,
    ) -> list[RunResult]:
        """Several segments' new members (and ``before``'s writes) in ONE transaction; on failure nothing changes
        and each segment's history says why."""

        def job(conn: sqlite3.Connection) -> list[RunResult]:
            if before is not None:
                before(conn)
            return [
                _write_run(conn, segment, members, trigger, started, started_at, scope) for segment, members in changes
            ]

        try:
            return self.store.write(job)
        except Exception as exc:  # the transaction rolled back: previous members stay; say so in the history
            error = f"{type(exc).__name__}: {exc}"
            return [
                self.record_failure(segment, trigger=trigger, started=started, started_at=started_at, error=error)
                for segment, _ in changes
            ]

    def record_failure(
        self, segment: dict[str, Any], *, trigger: str, started: float, started_at: str, error: str | None
    ) -> RunResult:
        """A failed run in the segment's history; its members stay as they were."""
        return self.record_run(segment, "failed", trigger=trigger, started=started, started_at=started_at, error=error)

    def record_run(
        self,
        segment: dict[str, Any],
        status: str,
        *,
        trigger: str,
        started: float,
        started_at: str,
        size: int | None = None,
        entered: int = 0,
        exited: int = 0,
        error: str | None = None,
    ) -> RunResult:
        """A history row alone, with no membership change of its own: a failed run, or the summary run of a
        cluster segment whose children hold the members."""
        key = segment["key"]

        def job(conn: sqlite3.Connection) -> RunResult:
            now = format_ts(utcnow())
            duration = int((time.perf_counter() - started) * 1000)
            run_id = _insert_run(conn, key, trigger, started_at, now, duration, status, size, entered, exited, error)
            return RunResult(key, run_id, status, size, entered, exited, duration, error)

        return self.store.write(job)


def _write_run(
    conn: sqlite3.Connection,
    segment: dict[str, Any],
    members: set[str] | MemberList,
    trigger: str,
    started: float,
    started_at: str,
    scope: list[str] | None,
) -> RunResult:
    key = segment["key"]
    now = format_ts(utcnow())
    duration = int((time.perf_counter() - started) * 1000)
    if isinstance(members, MemberList) and scope is None:
        # The stored members as one string: when it equals the new one nothing changed, and no id needs to
        # become a Python object (the usual scheduled run).
        count, text = _stored_members(conn, key)
        if (count, text) == (members.count, members.text):
            run_id = _insert_run(conn, key, trigger, started_at, now, duration, "succeeded", count, 0, 0, None)
            return RunResult(key, run_id, "succeeded", count, 0, 0, duration)
        current = _current(conn, key, None) if text is None else set(text.split(_SEP) if count else ())
    else:
        current = _current(conn, key, scope)
    wanted = set(members.ids()) if isinstance(members, MemberList) else members
    if scope is not None:
        wanted &= set(scope)
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
    """Each profile's identifiers, ordered by type and value."""
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
            rows.append((change, segment["key"], pid, orjson.dumps(data).decode(), now))
    conn.executemany(
        "INSERT INTO outbox (message_id, type, segment_key, profile_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(message_id, *row) for message_id, row in zip(new_message_ids(len(rows)), rows, strict=True)],
    )


def _merged(survivor: str, gone: str, now: str) -> dict[str, Any]:
    return {"profile": {"id": survivor}, "merged_profile_id": gone, "merged_at": now}


def follow_merges(conn: sqlite3.Connection, merges: Sequence[tuple[str, str]]) -> None:
    """Memberships follow the survivor of each (survivor, gone) merge, keeping the earliest entry;
    subscribers hear of each merge. A merged-away profile is never another merge's survivor."""
    if not merges:
        return
    if conn.execute("SELECT 1 FROM memberships LIMIT 1").fetchone() is not None:
        conn.executemany(
            "UPDATE memberships SET entered_at = min(entered_at, (SELECT m.entered_at FROM memberships m"
            " WHERE m.segment_key = memberships.segment_key AND m.profile_id = ?))"
            " WHERE profile_id = ? AND segment_key IN (SELECT segment_key FROM memberships WHERE profile_id = ?)",
            [(gone, survivor, gone) for survivor, gone in merges],
        )
        conn.executemany("UPDATE OR IGNORE memberships SET profile_id = ? WHERE profile_id = ?", merges)
        conn.executemany("DELETE FROM memberships WHERE profile_id = ?", [(gone,) for _, gone in merges])
    now = format_ts(utcnow())
    conn.executemany(
        "INSERT INTO outbox (message_id, type, segment_key, profile_id, payload, created_at)"
        " VALUES (?, 'profile.merged', NULL, ?, ?, ?)",
        [
            (message_id, survivor, orjson.dumps(_merged(survivor, gone, now)).decode(), now)
            for message_id, (survivor, gone) in zip(new_message_ids(len(merges)), merges, strict=True)
        ],
    )
