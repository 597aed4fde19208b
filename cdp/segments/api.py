"""``CDP.segments``: define, preview, compute and query segments."""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from cdp.errors import InvalidInput, SegmentExists, SegmentInUse, UnknownSegment
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.segments import rules
from cdp.segments.engine import Engine, MemberList, RunResult, identifiers_of
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow

log = logging.getLogger("cdp.segments")
ScheduleListener = Callable[[str, dict[str, str] | None], None]


def _schedule(schedule: Any) -> dict[str, str] | None:
    """The validated schedule as stored: {"every": "15m"} or {"cron": "0 * * * *"}."""
    if schedule is None:
        return None
    return {k: v for k, v in (("every", schedule.every), ("cron", schedule.cron)) if v}


def _row(segment: Mapping[str, Any]) -> dict[str, Any]:
    definition = orjson.loads(segment["definition"])
    return {
        **definition,
        "key": segment["key"],
        "name": segment["name"],
        "description": segment["description"],
        "type": segment["type"],
        "parent": segment["parent_key"],
        "schedule": orjson.loads(segment["schedule"]) if segment["schedule"] else None,
        "created_at": segment["created_at"],
        "updated_at": segment["updated_at"],
    }


class Segments:
    def __init__(self, store: Store, refresh_traits: Callable[[], int] | None = None) -> None:
        self.store = store
        self.engine = Engine(store)
        self.refresh_traits = refresh_traits
        self.schedule_listeners: builtins.list[ScheduleListener] = []

    # -- definitions -----------------------------------------------------------------------------

    def _rules(self, conn: sqlite3.Connection | None = None) -> dict[str, rules.Rule | None]:
        conn = conn or self.store.reader()
        out: dict[str, rules.Rule | None] = {}
        for key, definition in conn.execute("SELECT key, definition FROM segments"):
            out[key] = rules.validate(orjson.loads(definition)).rule
        return out

    def create(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        parsed = rules.validate(definition)
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM segments WHERE key = ?", (parsed.key,)).fetchone():
                raise SegmentExists(
                    f"a segment with key {parsed.key!r} exists; PUT /v1/segments/{parsed.key} to change it",
                    {"key": parsed.key},
                )
            all_rules = {**self._rules(conn), parsed.key: parsed.rule}
            rules.check_cycles(all_rules)
            conn.execute(
                "INSERT INTO segments (key, name, description, type, definition, schedule, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    parsed.key,
                    parsed.name,
                    parsed.description,
                    parsed.type,
                    orjson.dumps(dict(definition)).decode(),
                    orjson.dumps(_schedule(parsed.schedule)).decode() if parsed.schedule else None,
                    now,
                    now,
                ),
            )

        self.store.write(job)
        self._notify(parsed.key, _schedule(parsed.schedule))
        return self.get(parsed.key)

    def update(self, key: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        self._require(key)
        if definition.get("key", key) != key:
            raise InvalidInput(
                f"the key cannot change ({key!r} -> {definition.get('key')!r}); create a new segment instead",
                {"path": "/key"},
            )
        parsed = rules.validate({**definition, "key": key})
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> None:
            rules.check_cycles({**self._rules(conn), key: parsed.rule})
            conn.execute(
                "UPDATE segments SET name = ?, description = ?, type = ?, definition = ?, schedule = ?, updated_at = ?"
                " WHERE key = ?",
                (
                    parsed.name,
                    parsed.description,
                    parsed.type,
                    orjson.dumps({**definition, "key": key}).decode(),
                    orjson.dumps(_schedule(parsed.schedule)).decode() if parsed.schedule else None,
                    now,
                    key,
                ),
            )

        self.store.write(job)
        self._notify(key, _schedule(parsed.schedule))
        return self.get(key)

    def delete(self, key: str) -> None:
        self._require(key)
        users = [k for k, rule in self._rules().items() if rule is not None and key in rules.mentions(rule).segments]
        if users:
            raise SegmentInUse(
                f"segments {', '.join(sorted(users))} use {key!r} through in_segment; change them first",
                {"used_by": sorted(users)},
            )

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM memberships WHERE segment_key = ?", (key,))
            conn.execute("DELETE FROM segments WHERE parent_key = ?", (key,))
            conn.execute("DELETE FROM segments WHERE key = ?", (key,))

        self.store.write(job)
        self._notify(key, None)

    def _notify(self, key: str, schedule: dict[str, str] | None) -> None:
        for listener in self.schedule_listeners:
            listener(key, schedule)

    def _require(self, key: str) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM segments WHERE key = ?", (key,))
        if not rows:
            raise UnknownSegment(f"no segment with key {key!r}; GET /v1/segments lists them", {"key": key})
        return rows[0]

    def get(self, key: str) -> dict[str, Any]:
        segment = _row(self._require(key))
        conn = self.store.reader()
        segment["size"] = conn.execute("SELECT count(*) FROM memberships WHERE segment_key = ?", (key,)).fetchone()[0]
        last = self.store.query(
            "SELECT id, status, finished_at, error FROM segment_runs WHERE segment_key = ? ORDER BY id DESC LIMIT 1",
            (key,),
        )
        segment["last_run"] = last[0] if last else None
        return segment

    def list(
        self, *, parent: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        limit = check_limit(limit)
        where, params = ["1"], []
        if parent is not None:
            where.append("parent_key = ?")
            params.append(parent)
        position = decode_cursor(cursor)
        if position is not None:
            where.append("key > ?")
            params.append(str(position.get("key", "")))
        rows = self.store.query(
            f"SELECT * FROM segments WHERE {' AND '.join(where)} ORDER BY key LIMIT ?", [*params, limit + 1]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        sizes = dict(
            self.store.reader().execute("SELECT segment_key, count(*) FROM memberships GROUP BY segment_key").fetchall()
        )
        data = [{**_row(r), "size": sizes.get(r["key"], 0)} for r in rows]
        return Page(data, encode_cursor({"key": rows[-1]["key"]}) if more and rows else None)

    def schedules(self) -> dict[str, dict[str, str]]:
        return {
            key: orjson.loads(schedule)
            for key, schedule in self.store.reader().execute(
                "SELECT key, schedule FROM segments WHERE schedule IS NOT NULL"
            )
        }

    # -- computing -------------------------------------------------------------------------------

    def preview(self, definition: Mapping[str, Any], sample: int = 10) -> dict[str, Any]:
        """Size, a sample of members and the compiled SQL, without saving anything."""
        parsed = rules.validate({"key": "preview", "name": "preview", **definition})
        if parsed.rule is None:
            raise InvalidInput("only rule segments can be previewed", {"path": "/rule"})
        rules.check_cycles({**self._rules(), parsed.key: parsed.rule})
        now = utcnow()
        with self.engine.session(memberships=rules.mentions(parsed.rule).segments) as con:
            members = self.engine.members_sql(con, parsed.rule, now)
        compiled = rules.compile_rule(parsed.rule, now=now)
        chosen = sorted(members)[:sample]
        idents = identifiers_of(self.store.reader(), chosen)
        return {
            "size": len(members),
            "sample": [{"profile_id": pid, "identifiers": idents[pid]} for pid in chosen],
            "sql": compiled.sql,
            "params": [str(p) if not isinstance(p, int | float | str | type(None)) else p for p in compiled.params],
        }

    def compute(self, key: str, *, trigger: str = "manual") -> RunResult:
        return self.compute_many([key], trigger=trigger)[0]

    def compute_many(
        self,
        keys: builtins.list[str] | None = None,
        *,
        trigger: str = "manual",
        progress: Callable[[RunResult], None] | None = None,
    ) -> builtins.list[RunResult]:
        """Run segments (all rule segments by default) in dependency order over one DuckDB session."""
        all_rules = self._rules()
        wanted = set(all_rules) if keys is None else set(keys)
        for key in wanted:
            self._require(key)
        order = [k for k in rules.evaluation_order(all_rules) if k in wanted and all_rules.get(k) is not None]
        results: builtins.list[RunResult] = []
        if self.refresh_traits is not None and order:
            self.refresh_traits()  # rules read stored traits; bring the changed profiles up to date first
        now = utcnow()
        # Segments that in_segment reads (their stored members are copied into the session, and again after
        # each of their runs here, so dependants see this run's members).
        used = {k for key in order if (r := all_rules[key]) is not None for k in rules.mentions(r).segments}
        with self.engine.session(materialize=len(order) > 3, memberships=used) as con:
            for key in order:
                segment = self._require(key)
                rule = all_rules[key]
                assert rule is not None
                with self.engine._exclusive(key):
                    started, started_at = time.perf_counter(), format_ts(utcnow())
                    try:
                        members: MemberList | set[str] | None = self.engine.members_sorted(con, rule, now)
                        error = None
                    except Exception as exc:  # recorded in the history; previous members stay
                        log.exception("segment %s failed", key)
                        members, error = None, f"{type(exc).__name__}: {exc}"
                    result = self.engine.record(
                        segment, members, trigger=trigger, started=started, started_at=started_at, error=error
                    )
                    if key in used:
                        self.engine.load_memberships(con, key)
                results.append(result)
                if progress:
                    progress(result)
        return results

    # -- reads -----------------------------------------------------------------------------------

    def members(self, key: str, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        self._require(key)
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        after = str(position.get("id", "")) if position else ""
        rows = (
            self.store.reader()
            .execute(
                "SELECT profile_id, entered_at FROM memberships WHERE segment_key = ? AND profile_id > ?"
                " ORDER BY profile_id LIMIT ?",
                (key, after, limit + 1),
            )
            .fetchall()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        idents = identifiers_of(self.store.reader(), [r[0] for r in rows])
        data = [{"profile_id": pid, "identifiers": idents[pid], "entered_at": at} for pid, at in rows]
        return Page(data, encode_cursor({"id": rows[-1][0]}) if more and rows else None)

    def history(self, key: str, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        self._require(key)
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        before = int(position.get("id", 0)) if position else 2**62
        rows = self.store.query(
            "SELECT id, trigger, started_at, finished_at, duration_ms, status, size, entered, exited, error"
            " FROM segment_runs WHERE segment_key = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (key, before, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"id": rows[-1]["id"]}) if more and rows else None)

    def of_profile(self, profile_id: str) -> builtins.list[dict[str, Any]]:
        """Segments a (live) profile is in, with the time it entered each."""
        rows = self.store.reader().execute(
            "SELECT s.key, s.name, m.entered_at FROM memberships m JOIN segments s ON s.key = m.segment_key"
            " WHERE m.profile_id = ? ORDER BY s.key",
            (profile_id,),
        )
        return [{"key": key, "name": name, "entered_at": at} for key, name, at in rows]
