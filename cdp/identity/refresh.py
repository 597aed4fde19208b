"""Refreshing the unified and computed traits of profiles after their records, traits or events changed.

Profiles go in chunks, each written in its own small transaction while the next is computed. When a
large share of the profiles is stale (the first resolution of an import), their records, identify
events and event aggregates are read in one pass each, and the chunks follow the profiles' storage
order (each transaction then rewrites few pages).

Every read is a short statement over a range of keys (``READ_PROFILES`` profiles, ``READ_ROWS`` rows), each
its own snapshot, fetched at once: SQLite cannot restart the WAL while a reader holds a snapshot, and one
statement over all events held one for the whole pass while ingest kept writing. Rows that arrive between two
ranges are either read or left for the next refresh (events past the watermark read at the start make their
profiles stale again).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any

import orjson

from cdp.identity.traits import (
    COMPUTED_SQL,
    COUNTS_SQL,
    ORDER_EVENT,
    RECORD_COLUMNS,
    TraitSource,
    computed_from,
    computed_rows,
    identify_values,
    record_source_of,
    record_values,
    unify,
    unify_one,
)
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import now_iso, utcnow

READ_PROFILES = 2_000
"""Profiles one read statement of a dense refresh covers (a range of ids: an index range scan)."""
READ_ROWS = 50_000
"""Rows (of ``rowid``) one read statement of a table scan covers."""


class TraitRefresh:
    """One refresh of the stale profiles' traits (`cdp.identity.resolve.Resolution.refresh_traits`)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def run(self, chunk: int = 2000, dense_chunk: int = 20_000) -> int:
        """Refresh every stale profile (``chunk`` ids a transaction; ``dense_chunk`` when most are stale)."""
        conn = self.store.reader()
        watermark = conn.execute("SELECT value FROM resolution_state WHERE key = 'traits_event_id'").fetchone()
        last_event = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        found: dict[str, int] = {}
        for lo, hi in rowid_ranges(conn, "profiles"):
            found.update(
                conn.execute(
                    "SELECT id, rowid FROM profiles WHERE rowid > ? AND rowid <= ? AND merged_into IS NULL"
                    " AND (refreshed_at IS NULL OR updated_at > refreshed_at)",
                    (lo, hi),
                ).fetchall()
            )
        for lo in range(int(watermark[0]) if watermark else 0, last_event, READ_ROWS):
            found.update(
                conn.execute(
                    "SELECT DISTINCT e.profile_id, p.rowid FROM events e JOIN profiles p ON p.id = e.profile_id"
                    " WHERE e.id > ? AND e.id <= ? AND p.merged_into IS NULL",
                    (lo, min(lo + READ_ROWS, last_event)),
                ).fetchall()
            )
        live = conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
        now = utcnow()
        batches: Iterable[list[tuple[str, str, str, str]]]
        if len(found) > chunk and len(found) * 4 >= live:
            stale = sorted(found, key=found.__getitem__)
            batches = self._all_traits(conn, stale, now, dense_chunk)
        else:
            stale = sorted(found)
            batches = (self._traits_for(conn, stale[i : i + chunk], now) for i in range(0, len(stale), chunk))
        pending: Future[None] | None = None
        for rows in batches:
            written = self.store.submit(partial(_save_traits, rows=rows))
            if pending is not None:
                pending.result()
            pending = written
        if pending is not None:
            pending.result()
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO resolution_state (key, value) VALUES ('traits_event_id', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(last_event),),
            )
        )
        return len(stale)

    def _traits_for(
        self, conn: sqlite3.Connection, profile_ids: list[str], now: Any
    ) -> list[tuple[str, str, str, str]]:
        marks = ",".join("?" * len(profile_ids))
        sources: dict[str, list[TraitSource]] = {p: [] for p in profile_ids}
        select = f"SELECT {_RECORD_COLUMNS} FROM source_records WHERE profile_id IN ({marks})"
        for values in conn.execute(select, profile_ids):
            sources[values[0]].append(record_source_of(values, 1))
        for pid, source, at, traits, context, event_id in conn.execute(
            f"SELECT profile_id, source, timestamp, traits, context, id FROM events"
            f" WHERE profile_id IN ({marks}) AND type = 'identify'",
            profile_ids,
        ):
            sources[pid].append(TraitSource(source, at, identify_values(traits, context), event_id))
        return self._trait_rows(profile_ids, sources, computed_rows(conn, now, profile_ids))

    def _all_traits(
        self, conn: sqlite3.Connection, stale: list[str], now: Any, chunk: int
    ) -> Iterator[list[tuple[str, str, str, str]]]:
        """`_traits_for` for many profiles: one pass per table (in ranges of profile ids, each a short
        statement), kept as rows until their chunk comes."""
        wanted = set(stale)
        records: dict[str, list[tuple[Any, ...]]] = {}
        identifies: dict[str, list[tuple[Any, ...]]] = {}
        aggregates: dict[str, tuple[tuple[Any, ...], dict[str, int]]] = {}
        in_range = ">= :lo AND profile_id <= :hi"
        ordered = sorted(wanted)
        for start in range(0, len(ordered), READ_PROFILES):
            bounds = {"lo": ordered[start], "hi": ordered[min(start + READ_PROFILES, len(ordered)) - 1]}
            select = f"SELECT {_RECORD_COLUMNS} FROM source_records WHERE profile_id {in_range}"
            for values in conn.execute(select, bounds).fetchall():
                if values[0] in wanted:
                    records.setdefault(values[0], []).append(values)
            for values in conn.execute(
                f"SELECT profile_id, source, timestamp, traits, context, id FROM events"
                f" WHERE profile_id {in_range} AND type = 'identify'",
                bounds,
            ).fetchall():
                if values[0] in wanted:
                    identifies.setdefault(values[0], []).append(values)
            for row in conn.execute(COMPUTED_SQL.format(where=in_range), {"order": ORDER_EVENT, **bounds}).fetchall():
                if row[0] in wanted:
                    aggregates[row[0]] = (row[1:], {})
            for pid, event, n in conn.execute(COUNTS_SQL.format(where=in_range), bounds).fetchall():
                if pid in aggregates:
                    aggregates[pid][1][event] = n
        del wanted, ordered
        priority = self.settings.trait_priority
        for start in range(0, len(stale), chunk):
            out, stamp = [], now_iso()
            for p in stale[start : start + chunk]:
                mine, seen = records.pop(p, ()), identifies.pop(p, ())
                if len(mine) == 1 and not seen:  # one record: nothing to choose between
                    traits = unify_one(record_values(mine[0], 1))
                else:
                    sources = [record_source_of(r, 1) for r in mine]
                    sources += [TraitSource(r[1], r[2], identify_values(r[3], r[4]), r[5]) for r in seen]
                    traits = unify(sources, priority, self.settings.trait_majority)
                found = aggregates.pop(p, None)
                computed = orjson.dumps(computed_from(now, *found)).decode() if found is not None else "{}"
                out.append((orjson.dumps(traits).decode(), computed, stamp, p))
            yield out

    def _trait_rows(
        self, profile_ids: list[str], sources: dict[str, list[TraitSource]], computed: dict[str, dict[str, Any]]
    ) -> list[tuple[str, str, str, str]]:
        stamp = now_iso()
        return [
            (
                orjson.dumps(unify(sources[p], self.settings.trait_priority, self.settings.trait_majority)).decode(),
                orjson.dumps(computed.get(p, {})).decode(),
                stamp,
                p,
            )
            for p in profile_ids
        ]


def rowid_ranges(conn: sqlite3.Connection, table: str, step: int | None = None) -> Iterator[tuple[int, int]]:
    """``(lo, hi]`` rowid ranges of ``step`` (``READ_ROWS``) covering ``table`` as it is now (later rows: the
    next run)."""
    step = step or READ_ROWS
    last = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0]
    for lo in range(0, last, step):
        yield lo, min(lo + step, last)


_RECORD_COLUMNS = ", ".join(["profile_id", *RECORD_COLUMNS])
"""What `record_source_of` reads of a source record, after ``profile_id``."""


def _save_traits(conn: sqlite3.Connection, rows: list[tuple[str, str, str, str]]) -> None:
    conn.executemany("UPDATE profiles SET traits = ?, computed = ?, refreshed_at = ? WHERE id = ?", rows)
