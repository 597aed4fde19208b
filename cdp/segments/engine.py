"""Evaluating segments and recording their runs.

Whole-segment runs compile the rule to SQL and run it in DuckDB over the SQLite store attached read-only,
in a child process (``cdp.duckdb_worker`` says why). Single-profile (real-time) runs use the reference
evaluator over that profile's rows, which property tests keep identical to the SQL. Either way
``cdp.segments.runs`` writes the diff against the stored members, the enter/exit rows, the run's history
row and one outbox row per change in ONE SQLite transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb
import orjson

from cdp.duckdb_worker import DuckDBWorker, attach_sql, sql_string
from cdp.ml.scores import merge_scores
from cdp.segments import rules
from cdp.segments.runs import MemberList, RunResult, insert_run, stored_members, write_run
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow

log = logging.getLogger("cdp.segments")

__all__ = ["DuckDBWorker", "Engine", "MemberList", "RunResult"]


class Engine:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Never two runs of one segment at once in this process."""
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def run_one(
        self,
        segment: dict[str, Any],
        evaluate: Callable[[], set[str] | MemberList],
        *,
        trigger: str,
        scope: list[str] | None = None,
    ) -> RunResult:
        """One run of a rule segment, however it was set off (schedule, API, real time, identity resolution):
        with the segment's lock held, ``evaluate`` its members and record them (all of them, or only the
        ``scope`` profiles'); an evaluation that fails is recorded in the history and the members stay."""
        with self.exclusive(segment["key"]):
            started, started_at = time.perf_counter(), format_ts(utcnow())
            try:
                members: set[str] | MemberList | None = evaluate()
                error = None
            except Exception as exc:  # recorded in the history; previous members stay
                log.exception("segment %s (%s run) failed", segment["key"], trigger)
                members, error = None, f"{type(exc).__name__}: {exc}"
            return self.record(
                segment, members, trigger=trigger, started=started, started_at=started_at, scope=scope, error=error
            )

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
            wanted = ", ".join(sql_string(n) for n in sorted(names)) or "NULL"
            read = ", ".join(sql_string(n) for n in sorted(with_properties)) or "NULL"
            events_sql = (
                "CREATE TEMP TABLE events AS SELECT profile_id, type, event, timestamp,"
                f" CASE WHEN event IN ({read}) THEN properties END AS properties"
                f" FROM db.events WHERE profile_id IS NOT NULL AND event IN ({wanted})"
            )
        con = DuckDBWorker(
            [
                attach_sql(self.store.path),
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
        count, text = stored_members(self.store.reader(), key)
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
        """The reference evaluator over just these profiles' rows (real-time re-evaluation).

        Only the events the rule can match are read (by name), and their properties only where the rule reads
        them, as in a DuckDB session: real-time runs go every couple of seconds under load, and reading every
        event of every profile in scope made each run's memory grow with the profiles' whole history."""
        conn = self.store.reader()
        marks = ",".join("?" * len(profile_ids))
        profiles = {
            pid: {"traits": orjson.loads(traits), "computed": merge_scores(orjson.loads(computed), scores)}
            for pid, traits, computed, scores in conn.execute(
                f"SELECT id, traits, computed, scores FROM profiles WHERE id IN ({marks}) AND merged_into IS NULL",
                profile_ids,
            )
        }
        names, with_properties = rules.reads_events([rule])
        events = []
        if names:
            wanted = sorted(names)
            events = [
                {"profile_id": pid, "type": kind, "event": name, "timestamp": ts,
                 "properties": orjson.loads(props) if props and name in with_properties else None}
                for pid, kind, name, ts, props in conn.execute(
                    f"SELECT profile_id, type, event, timestamp, properties FROM events WHERE profile_id IN ({marks})"
                    f" AND event IN ({','.join('?' * len(wanted))})",
                    [*profile_ids, *wanted],
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
        notes: Mapping[str, str] | None = None,
    ) -> list[RunResult]:
        """Several segments' new members (and ``before``'s writes) in ONE transaction; on failure nothing changes
        and each segment's history says why."""

        def job(conn: sqlite3.Connection) -> list[RunResult]:
            if before is not None:
                before(conn)
            return [
                write_run(
                    conn, segment, members, trigger, started, started_at, scope, (notes or {}).get(segment["key"])
                )
                for segment, members in changes
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
        note: str | None = None,
    ) -> RunResult:
        """A history row alone, with no membership change of its own: a failed run, or the summary run of a
        cluster segment whose children hold the members."""
        key = segment["key"]

        def job(conn: sqlite3.Connection) -> RunResult:
            now = format_ts(utcnow())
            duration = int((time.perf_counter() - started) * 1000)
            run_id = insert_run(
                conn, key, trigger, started_at, now, duration, status, size, entered, exited, error, note
            )
            return RunResult(key, run_id, status, size, entered, exited, duration, error, note)

        return self.store.write(job)
