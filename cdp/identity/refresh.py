"""Refreshing the unified and computed traits of profiles after their records, traits or events changed.

Profiles go in chunks, computed while the previous chunk is written. When a large share of the profiles is
stale (the first resolution of an import), their records, identify events and event aggregates are read in one
pass each, and the chunks follow the profiles' storage order (each transaction then rewrites few pages).

Writes are bounded in the server (`Store.shared`: its ingest writer process and its scheduled jobs write to
the store at once): at most ``WRITE_PROFILES`` profiles a transaction, and before the next one, if the WAL has
grown past the store's truncation size, a prompt checkpoint (`Store.relieve_wal`). Under sustained ingest every
profile with new events is stale at every refresh; one transaction of 20,000 profiles wrote ~20 MB to the WAL at
once, and the log could not be restarted in between. Alone with the store (a `cdp resolve` after an import) a
chunk is one transaction: small ones rewrite the same index pages again and again (2.7 times as long for 141,000
profiles). Either way a row is written only when its traits or computed traits really changed (or it was stale
by ``updated_at``). Between two transactions a reader may see some profiles
refreshed and others not yet: each profile row is always whole (its traits, computed traits and
``refreshed_at`` change together), and a profile not yet refreshed shows its previous traits, as it did before
the refresh started. Only one refresh runs at a time per store: the real-time segments, scheduled segment runs
and resolution all ask for one, and two at once computed and wrote the same profiles twice.

Every read is a short statement over a range of keys (``READ_PROFILES`` profiles, ``READ_ROWS`` rows), each
its own snapshot, fetched at once: SQLite cannot restart the WAL while a reader holds a snapshot, and one
statement over all events held one for the whole pass while ingest kept writing. Rows that arrive between two
ranges are either read or left for the next refresh (events past the watermark read at the start make their
profiles stale again).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any

import orjson

from cdp import bulk_indexes
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
    unify_one,
)
from cdp.identity.traits import unify as unify_all
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import now_iso, utcnow

READ_PROFILES = 2_000
"""Profiles one read statement of a dense refresh covers (a range of ids: an index range scan)."""
READ_ROWS = 50_000
"""Rows (of ``rowid``) one read statement of a table scan covers."""
SET_ASIDE_MIN = 10_000
SET_ASIDE_SHARE = 0.25
"""A refresh alone with the store whose profiles to unify again number at least ``SET_ASIDE_MIN`` and
``SET_ASIDE_SHARE`` of the live profiles sets the name-search indexes aside (`cdp.bulk_indexes`): keeping
them up to date costs about 40 us a profile written, building them again about 8 us a live profile."""
WRITE_PROFILES = 500
"""Profiles one write transaction of a refresh updates at most (a few hundred KB of WAL)."""

_running: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_running_guard = threading.Lock()


def refresh_lock(store: Store) -> threading.Lock:
    """The lock that keeps refreshes of one store one at a time."""
    with _running_guard:
        lock = _running.get(store)
        if lock is None:
            lock = _running[store] = threading.Lock()
        return lock


class TraitRefresh:
    """One refresh of the stale profiles' traits (`cdp.identity.resolve.Resolution.refresh_traits`)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        write_profiles: int | None = None,
        set_aside_min: int = SET_ASIDE_MIN,
    ) -> None:
        self.store = store
        self.settings = settings
        self.write_profiles = write_profiles
        self.set_aside_min = set_aside_min
        """Profiles a write transaction holds at most; None: `WRITE_PROFILES` in the server (`Store.shared`),
        else a whole chunk."""
        self.written: list[int] = []
        """Rows each committed write transaction changed, in order (what the refresh wrote)."""
        self.set_aside = False
        """Whether the last run set the name-search indexes aside while it wrote (see `SET_ASIDE_MIN`)."""

    def run(self, chunk: int = 2000, dense_chunk: int = 20_000) -> int:
        """Refresh every stale profile (computed ``chunk`` ids at a time; ``dense_chunk`` when most are stale),
        written ``write_profiles`` at most a transaction. A refresh already running for this store is waited
        for first (this one then finds only what went stale since)."""
        with refresh_lock(self.store):
            return self._run(chunk, dense_chunk)

    def _run(self, chunk: int, dense_chunk: int) -> int:
        conn = self.store.reader()
        watermark = conn.execute("SELECT value FROM resolution_state WHERE key = 'traits_event_id'").fetchone()
        last_event = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        found: dict[str, int] = {}
        # Profiles whose traits may have changed: stale by updated_at (records, merges, edits), or with a new
        # identify event. The others found (new track, page... events only) need their computed traits alone.
        unify: set[str] = set()
        for lo, hi in rowid_ranges(conn, "profiles"):
            rows = conn.execute(
                "SELECT id, rowid FROM profiles WHERE rowid > ? AND rowid <= ? AND merged_into IS NULL"
                " AND (refreshed_at IS NULL OR updated_at > refreshed_at)",
                (lo, hi),
            ).fetchall()
            found.update(rows)
            unify.update(pid for pid, _ in rows)
        for lo in range(int(watermark[0]) if watermark else 0, last_event, READ_ROWS):
            for pid, rowid, identify in conn.execute(
                "SELECT e.profile_id, p.rowid, max(e.type = 'identify') FROM events e"
                " JOIN profiles p ON p.id = e.profile_id WHERE e.id > ? AND e.id <= ? AND p.merged_into IS NULL"
                " GROUP BY e.profile_id",
                (lo, min(lo + READ_ROWS, last_event)),
            ).fetchall():
                found[pid] = rowid
                if identify:
                    unify.add(pid)
        live = conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
        now = utcnow()
        batches: Iterable[list[TraitRow]]
        if len(found) > chunk and len(found) * 4 >= live:
            stale = sorted(found, key=found.__getitem__)
            batches = self._all_traits(conn, stale, unify, now, dense_chunk)
        else:
            stale = sorted(found)
            batches = (self._traits_for(conn, stale[i : i + chunk], unify, now) for i in range(0, len(stale), chunk))
        bounded = self.write_profiles is not None or self.store.shared  # else a chunk a transaction
        # Alone with the store and rewriting the traits of most profiles (the first refresh of an import), the
        # name-search indexes over the traits are built again afterwards rather than kept up to date row by row.
        self.set_aside = not bounded and len(unify) >= max(self.set_aside_min, live * SET_ASIDE_SHARE)
        if self.set_aside:
            self.store.write(partial(bulk_indexes.set_aside, table="profiles", column="traits"))
        try:
            self._write(batches, found, bounded)
        finally:
            if self.set_aside:
                self.store.write(bulk_indexes.restore)
        self.store.write(
            lambda c: c.execute(
                "INSERT INTO resolution_state (key, value) VALUES ('traits_event_id', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(last_event),),
            )
        )
        return len(stale)

    def _write(self, batches: Iterable[list[TraitRow]], rowids: dict[str, int], bounded: bool) -> None:
        """Each chunk written while the next is computed; ``bounded``: `WRITE_PROFILES` a transaction, with
        a prompt checkpoint between two."""
        pending: Future[int] | None = None
        for computed in batches:
            rows = [(*row, rowids[row[3]]) for row in computed]  # written by rowid (see `_save_traits`)
            size = (self.write_profiles or WRITE_PROFILES) if bounded else max(len(rows), 1)
            for start in range(0, len(rows), size):
                written = self.store.submit(partial(_save_traits, rows=rows[start : start + size]))
                if pending is not None:
                    self.written.append(pending.result())
                    if bounded:
                        self.store.relieve_wal()
                pending = written
        if pending is not None:
            self.written.append(pending.result())

    def _traits_for(
        self, conn: sqlite3.Connection, profile_ids: list[str], unify: set[str], now: Any
    ) -> list[TraitRow]:
        """Rows for these profiles: traits unified again for those in ``unify``, computed traits for all."""
        ids = [p for p in profile_ids if p in unify]
        marks = ",".join("?" * len(ids))
        sources: dict[str, list[TraitSource]] = {p: [] for p in ids}
        if ids:
            select = f"SELECT {_RECORD_COLUMNS} FROM source_records WHERE profile_id IN ({marks})"
            for values in conn.execute(select, ids):
                sources[values[0]].append(record_source_of(values, 1))
            for pid, source, at, traits, context, event_id in conn.execute(
                f"SELECT profile_id, source, timestamp, traits, context, id FROM events"
                f" WHERE profile_id IN ({marks}) AND type = 'identify'",
                ids,
            ):
                sources[pid].append(TraitSource(source, at, identify_values(traits, context), event_id))
        return self._trait_rows(profile_ids, sources, computed_rows(conn, now, profile_ids))

    def _all_traits(
        self, conn: sqlite3.Connection, stale: list[str], unify: set[str], now: Any, chunk: int
    ) -> Iterator[list[TraitRow]]:
        """`_traits_for` for many profiles: one pass per table (in ranges of profile ids, each a short
        statement), kept as rows until their chunk comes (records and identify events only of the profiles
        in ``unify``)."""
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
                if values[0] in unify:
                    records.setdefault(values[0], []).append(values)
            for values in conn.execute(
                f"SELECT profile_id, source, timestamp, traits, context, id FROM events"
                f" WHERE profile_id {in_range} AND type = 'identify'",
                bounds,
            ).fetchall():
                if values[0] in unify:
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
            out: list[TraitRow] = []
            stamp = now_iso()
            for p in stale[start : start + chunk]:
                found = aggregates.pop(p, None)
                computed = orjson.dumps(computed_from(now, *found)).decode() if found is not None else "{}"
                if p not in unify:
                    out.append((None, computed, stamp, p))
                    continue
                mine, seen = records.pop(p, ()), identifies.pop(p, ())
                if len(mine) == 1 and not seen:  # one record: nothing to choose between
                    traits = unify_one(record_values(mine[0], 1))
                else:
                    sources = [record_source_of(r, 1) for r in mine]
                    sources += [TraitSource(r[1], r[2], identify_values(r[3], r[4]), r[5]) for r in seen]
                    traits = unify_all(sources, priority, self.settings.trait_majority)
                out.append((orjson.dumps(traits).decode(), computed, stamp, p))
            yield out

    def _trait_rows(
        self, profile_ids: list[str], sources: dict[str, list[TraitSource]], computed: dict[str, dict[str, Any]]
    ) -> list[TraitRow]:
        stamp = now_iso()
        return [
            (
                orjson.dumps(unify_all(sources[p], self.settings.trait_priority, self.settings.trait_majority)).decode()
                if p in sources
                else None,
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


TraitRow = tuple[str | None, str, str, str]
"""(traits JSON, or None where only the computed traits were recomputed; computed JSON; stamp; profile id)."""

SavedRow = tuple[str | None, str, str, str, int]
"""A `TraitRow` and the profile's rowid."""


def _save_traits(conn: sqlite3.Connection, rows: list[SavedRow]) -> int:
    """Write the rows that changed; the number written. A profile whose traits are unchanged keeps them (and
    the name indexes over them are not touched); one whose computed traits are unchanged too is left alone,
    unless it was stale by ``updated_at`` (then only ``refreshed_at`` moves). Rows without traits (no new
    identify event, not stale by ``updated_at``) change the computed traits alone.

    Rows are found by rowid, which is read with the stale ids (half the cost of a write found by id, a sixth
    of a statement that writes nothing); the id is checked too, so a rowid changed meanwhile (a ``VACUUM``)
    writes nothing, and that profile stays stale for the next refresh."""
    before = conn.total_changes
    unified = [row for row in rows if row[0] is not None]
    conn.executemany(
        "UPDATE profiles SET traits = ?1, computed = ?2, refreshed_at = ?3 WHERE rowid = ?5 AND id = ?4"
        " AND traits IS NOT ?1",
        unified,
    )
    conn.executemany(
        "UPDATE profiles SET computed = ?2, refreshed_at = ?3 WHERE rowid = ?5 AND id = ?4 AND traits IS ?1"
        " AND (computed IS NOT ?2 OR refreshed_at IS NULL OR updated_at > refreshed_at)",
        unified,
    )
    conn.executemany(
        "UPDATE profiles SET computed = ?1 WHERE rowid = ?3 AND id = ?2 AND computed IS NOT ?1",
        [(row[1], row[3], row[4]) for row in rows if row[0] is None],
    )
    return conn.total_changes - before
