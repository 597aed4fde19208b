"""``CDP.segments``: define, preview, compute and query segments."""

from __future__ import annotations

import builtins
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from cdp import trait_picks
from cdp.errors import CDPError, InvalidInput, SegmentExists, SegmentInUse, UnknownSegment
from cdp.hooks import Hook
from cdp.outbox import identifiers_of
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.segments import preview_sample, rules
from cdp.segments.engine import Engine, RunResult
from cdp.segments.ml_segments import ML_TYPES, MLSegments, forget
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow

log = logging.getLogger("cdp.segments")


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
        self.ml = MLSegments(store, self.engine)
        self.refresh_traits = refresh_traits
        # After a definition is created, changed or deleted: its key and its schedule (None: no schedule).
        self.schedule_changed: Hook[[str, dict[str, str] | None]] = Hook("schedule_changed")

    # -- definitions -----------------------------------------------------------------------------

    def rules_by_key(self, conn: sqlite3.Connection | None = None) -> dict[str, rules.Rule | None]:
        conn = conn or self.store.reader()
        out: dict[str, rules.Rule | None] = {}
        for key, kind, definition in conn.execute("SELECT key, type, definition FROM segments"):
            out[key] = rules.validate(orjson.loads(definition)).rule if kind == "rule" else None
        return out

    def _check(self, parsed: rules.Definition, conn: sqlite3.Connection | None = None) -> None:
        """What the schema cannot say: ML models, keys that a cluster segment's children would take."""
        conn = conn or self.store.reader()
        for (parent,) in conn.execute("SELECT key FROM segments WHERE type = 'cluster' AND parent_key IS NULL"):
            if parsed.key.startswith(parent + ".") and parent != parsed.key:
                raise InvalidInput(
                    f"keys {parent}.<n> belong to the clusters of segment {parent!r}; choose another key",
                    {"path": "/key"},
                )
        if parsed.type in ML_TYPES:
            self.ml.check(parsed.type, parsed.model, parsed.select)

    def create(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        parsed = rules.validate(definition)
        self._check(parsed)
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM segments WHERE key = ?", (parsed.key,)).fetchone():
                raise SegmentExists(
                    f"a segment with key {parsed.key!r} exists; PUT /v1/segments/{parsed.key} to change it",
                    {"key": parsed.key},
                )
            all_rules = {**self.rules_by_key(conn), parsed.key: parsed.rule}
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
        existing = self.require(key)
        self._not_a_child(existing)
        if definition.get("key", key) != key:
            raise InvalidInput(
                f"the key cannot change ({key!r} -> {definition.get('key')!r}); create a new segment instead",
                {"path": "/key"},
            )
        parsed = rules.validate({**definition, "key": key})
        if parsed.type != existing["type"]:
            raise InvalidInput(
                f"the type cannot change ({existing['type']} -> {parsed.type}); create a new segment instead",
                {"path": "/type"},
            )
        self._check(parsed)
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> None:
            rules.check_cycles({**self.rules_by_key(conn), key: parsed.rule})
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
        existing = self.require(key)
        self._not_a_child(existing)
        family = {key} | {
            r[0] for r in self.store.reader().execute("SELECT key FROM segments WHERE parent_key = ?", (key,))
        }
        users = [
            k
            for k, rule in self.rules_by_key().items()
            if rule is not None and k not in family and family & rules.mentions(rule).segments
        ]
        if users:
            raise SegmentInUse(
                f"segments {', '.join(sorted(users))} use {key!r} through in_segment; change them first",
                {"used_by": sorted(users)},
            )

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM memberships WHERE segment_key = ? OR segment_key IN"
                " (SELECT key FROM segments WHERE parent_key = ?)",
                (key, key),
            )
            conn.execute("DELETE FROM segments WHERE parent_key = ?", (key,))
            conn.execute("DELETE FROM segments WHERE key = ?", (key,))
            if existing["type"] in ML_TYPES:
                forget(conn, key)

        self.store.write(job)
        self._notify(key, None)

    @staticmethod
    def _not_a_child(segment: Mapping[str, Any]) -> None:
        if segment["parent_key"]:
            raise InvalidInput(
                f"segment {segment['key']!r} is a cluster of {segment['parent_key']!r}, made by its runs;"
                f" change or delete {segment['parent_key']!r} instead",
                {"key": segment["key"], "parent": segment["parent_key"]},
            )

    def _notify(self, key: str, schedule: dict[str, str] | None) -> None:
        self.schedule_changed(key, schedule)

    def require(self, key: str) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM segments WHERE key = ?", (key,))
        if not rows:
            raise UnknownSegment(f"no segment with key {key!r}; GET /v1/segments lists them", {"key": key})
        return rows[0]

    def get(self, key: str) -> dict[str, Any]:
        segment = _row(self.require(key))
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

    @staticmethod
    def schema() -> dict[str, Any]:
        """The JSON Schema of segment definitions."""
        return rules.SCHEMA

    def schedules(self) -> dict[str, dict[str, str]]:
        return {
            key: orjson.loads(schedule)
            for key, schedule in self.store.reader().execute(
                "SELECT key, schedule FROM segments WHERE schedule IS NOT NULL"
            )
        }

    # -- computing -------------------------------------------------------------------------------

    def preview(
        self, definition: Mapping[str, Any], sample: int = 10, *, estimate_above: int | None = None
    ) -> dict[str, Any]:
        """Size, a sample of members and the compiled SQL, without saving anything.

        With ``estimate_above``, a store with more profile rows than that is not evaluated whole: the size is
        estimated from a random sample of ``estimate_above`` profiles (``cdp.segments.preview_sample``), the
        answer says ``"exact": false`` and gives the sample and a 95 % interval under ``estimate``."""
        parsed = rules.validate({"key": "preview", "name": "preview", **definition})
        if parsed.rule is None:
            raise InvalidInput("only rule segments can be previewed", {"path": "/rule"})
        rules.check_cycles({**self.rules_by_key(), parsed.key: parsed.rule})
        now = utcnow()
        extra: dict[str, Any] = {"exact": True}
        if estimate_above is not None and preview_sample.profile_span(self.store.reader()) > estimate_above:
            found = preview_sample.estimate(self.store.reader(), self.engine, parsed.rule, now, estimate_above)
            members, size = found.members, found.size
            extra = {"exact": False, "estimate": found.to_dict()}
        else:
            with self.engine.session(memberships=rules.mentions(parsed.rule).segments) as con:
                members = self.engine.members_sql(con, parsed.rule, now)
            size = len(members)
        compiled = rules.compile_rule(parsed.rule, now=now)
        chosen = sorted(members)[:sample]
        idents = identifiers_of(self.store.reader(), chosen)
        return {
            **extra,
            "size": size,
            "sample": [{"profile_id": pid, "identifiers": idents[pid]} for pid in chosen],
            "sql": compiled.sql,
            "params": [str(p) if not isinstance(p, int | float | str | type(None)) else p for p in compiled.params],
        }

    def compute(self, key: str, *, trigger: str = "manual") -> RunResult:
        """Run one segment now. A machine-learned segment whose training fails for a reason the user can fix
        (not enough data, a bad model) raises it after recording the failed run in the history."""
        segment = self.require(key)
        if segment["type"] in ML_TYPES:
            owner = self.require(segment["parent_key"]) if segment["parent_key"] else segment
            with self.engine.exclusive(owner["key"]):
                results, error = self.ml.run(owner, trigger=trigger)
            if isinstance(error, CDPError):
                raise error
            return results[0]
        return self.compute_many([key], trigger=trigger)[0]

    def compute_many(
        self,
        keys: builtins.list[str] | None = None,
        *,
        trigger: str = "manual",
        progress: Callable[[RunResult], None] | None = None,
    ) -> builtins.list[RunResult]:
        """Run segments (all by default) over one DuckDB session: machine-learned ones first (rules may use their
        clusters through in_segment), then rules in dependency order. Runs after an identity resolution leave
        the ML segments to their own schedules (memberships follow merges anyway)."""
        all_rules = self.rules_by_key()
        wanted = set(all_rules) if keys is None else set(keys)
        ml_keys: builtins.list[str] = []
        for key in sorted(wanted):
            segment = self.require(key)
            if segment["type"] in ML_TYPES:
                owner = segment["parent_key"] or key
                if owner not in ml_keys and not (keys is None and trigger == "resolution"):
                    ml_keys.append(owner)
        results: builtins.list[RunResult] = []
        for key in ml_keys:
            with self.engine.exclusive(key):
                ml_results, _ = self.ml.run(self.require(key), trigger=trigger)
            results += ml_results
            if progress:
                progress(ml_results[0])
        order = [k for k in rules.evaluation_order(all_rules) if k in wanted and all_rules.get(k) is not None]
        if self.refresh_traits is not None and order:
            self.refresh_traits()  # rules read stored traits; bring the changed profiles up to date first
        now = utcnow()
        # Segments that in_segment reads (their stored members are copied into the session, and again after
        # each of their runs here, so dependants see this run's members).
        used = {k for key in order if (r := all_rules[key]) is not None for k in rules.mentions(r).segments}
        if not order:
            return results
        reads = rules.reads_events(r for key in order if (r := all_rules[key]) is not None)
        with self.engine.session(materialize=len(order) > 3, memberships=used, events=reads) as con:
            for key in order:
                rule = all_rules[key]
                assert rule is not None
                result = self.engine.run_one(
                    self.require(key), functools.partial(self.engine.members_sorted, con, rule, now), trigger=trigger
                )
                if key in used:
                    self.engine.load_memberships(con, key)
                results.append(result)
                if progress:
                    progress(result)
        return results

    def model(self, key: str) -> dict[str, Any]:
        return self.ml.model(key, self.require(key))

    def plot(self, key: str, fmt: str = "png", kind: str = "clusters") -> bytes:
        """A cluster segment's picture: ``clusters`` or ``profiles`` (see ``cdp.ml.plot``), PNG or SVG."""
        return self.ml.plot(key, self.require(key), fmt, kind)

    def figure(self, key: str, kind: str = "clusters") -> Any:
        return self.ml.figure(key, self.require(key), kind)

    def history_figure(self, key: str, *, runs: int = 5000) -> Any:
        from cdp.segments.charts import history_figure

        segment = self.require(key)
        return history_figure(str(segment["name"]), self._runs(key, runs))

    def _runs(self, key: str, runs: int) -> builtins.list[dict[str, Any]]:
        return self.store.query(
            "SELECT id, finished_at, status, size, entered, exited FROM segment_runs WHERE segment_key = ?"
            " ORDER BY id DESC LIMIT ?",
            (key, runs),
        )

    # -- reads -----------------------------------------------------------------------------------

    def members(
        self,
        key: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        traits: builtins.list[str] | str | None = None,
    ) -> Page[dict[str, Any]]:
        """Current members with their identifiers; ``traits`` (names, or "a,b") adds each one's ``traits``."""
        names = trait_picks.check(traits)
        self.require(key)
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
        if names:
            picked = trait_picks.pick(self.store.reader(), [r[0] for r in rows], names)
            for item in data:
                item.update(picked[item["profile_id"]])
        return Page(data, encode_cursor({"id": rows[-1][0]}) if more and rows else None)

    def history(self, key: str, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        self.require(key)
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        before = int(position.get("id", 0)) if position else 2**62
        rows = self.store.query(
            "SELECT id, trigger, started_at, finished_at, duration_ms, status, size, entered, exited, error, note"
            " FROM segment_runs WHERE segment_key = ? AND id < ? ORDER BY id DESC LIMIT ?",
            (key, before, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"id": rows[-1]["id"]}) if more and rows else None)

    def history_chart(self, key: str, fmt: str = "png", *, runs: int = 5000) -> bytes:
        """The segment's size over time with entries and exits (the last ``runs`` runs), as PNG or SVG."""
        from cdp.ml.plot import check_format
        from cdp.segments.charts import draw_history

        check_format(fmt)
        segment = self.require(key)
        return draw_history(str(segment["name"]), self._runs(key, runs), fmt)

    def of_profile(self, profile_id: str) -> builtins.list[dict[str, Any]]:
        """Segments a (live) profile is in, with the time it entered each."""
        rows = self.store.reader().execute(
            "SELECT s.key, s.name, m.entered_at FROM memberships m JOIN segments s ON s.key = m.segment_key"
            " WHERE m.profile_id = ? ORDER BY s.key",
            (profile_id,),
        )
        return [{"key": key, "name": name, "entered_at": at} for key, name, at in rows]
