"""The write half of tracking ingest: store validated batches (``store_batch``/``store_batches``) in the writer's
transaction, and the writers that run it: ``InlineWriter`` (this process's store writer thread) or
``cdp.ingest.writer.ProcessWriter`` (the ingest writer process under ``cdp serve``). Validation is
``cdp.ingest.tracking``'s; the rows are ``cdp.ingest.rows.EventRow``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Protocol

from cdp.chunks import chunked, marks
from cdp.identity.graph import IdentityGraph, Observation, ObservationTuple
from cdp.ingest.rows import INSERT_EVENT, Batch, EventRow, Stored
from cdp.privacy import consent
from cdp.privacy.suppression import drop_suppressed_events
from cdp.quality import Tally
from cdp.settings import Settings
from cdp.store import Store

__all__ = ["INSERT_EVENT", "BatchWriter", "InlineWriter", "make_writer", "store_batch", "store_batches"]


def store_batch(conn: sqlite3.Connection, graph: IdentityGraph, batch: Batch) -> Stored:
    """The write half of ingest, in the writer's transaction: drop messageIds already stored, link
    identities, insert the rest, add the data-quality counters.

    Returns (stored, duplicates, index in the batch of each stored row, its profile id).
    """
    rows, observations, names, tally = batch
    ids = [r.message_id for r in rows]
    existing = _existing_ids(conn, ids)
    if not existing and len(set(ids)) == len(ids):  # the usual case: nothing seen before
        fresh = list(range(len(rows)))
    else:
        # Validation counted every row as received and stored; a duplicate moves to its own count.
        fresh = []
        for index, (message_id, (source, name)) in enumerate(zip(ids, names, strict=True)):
            if message_id in existing:
                tally.add("events", source, name, "duplicates")
                tally.add("events", source, name, "stored", -1)
                continue
            existing.add(message_id)
            fresh.append(index)
    fresh = drop_suppressed_events(conn, fresh, observations, names, tally)
    profiles: list[str | None] = []
    if fresh:
        profiles = graph.observe(conn, [Observation(*observations[i]) for i in fresh])
        stored = [rows[i].stored(profile) for i, profile in zip(fresh, profiles, strict=True)]
        _insert_events(conn, stored)
        consent.record_events(conn, stored)
        groups = [(r.profile_id, r.group_id, r.received_at) for r in stored if r.group_id and r.profile_id]
        if groups:
            conn.executemany(
                "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen) VALUES (?, ?, ?)", groups
            )
    tally.write(conn)
    return len(fresh), len(rows) - len(fresh), fresh, profiles


def store_batches(conn: sqlite3.Connection, graph: IdentityGraph, batches: list[Batch]) -> list[Stored]:
    """Several requests' batches stored as one (one deduplication query, one pass of the identity
    graph, one INSERT, one write of the counters), each request's outcome as if stored in turn."""
    if len(batches) == 1:
        return [store_batch(conn, graph, batches[0])]
    rows: list[EventRow] = []
    observations: list[ObservationTuple] = []
    names: list[tuple[str, str]] = []
    tally = Tally()
    bounds: list[tuple[int, int]] = []
    for batch_rows, batch_observations, batch_names, batch_tally in batches:
        bounds.append((len(rows), len(rows) + len(batch_rows)))
        rows += batch_rows
        observations += batch_observations
        names += batch_names
        tally.merge(batch_tally)
    _, _, fresh, profiles = store_batch(conn, graph, (rows, observations, names, tally))
    out: list[Stored] = []
    at = 0
    for low, high in bounds:
        mine: list[int] = []
        theirs: list[str | None] = []
        while at < len(fresh) and fresh[at] < high:
            mine.append(fresh[at] - low)
            theirs.append(profiles[at])
            at += 1
        out.append((len(mine), high - low - len(mine), mine, theirs))
    return out


class BatchWriter(Protocol):
    def start(self) -> None: ...

    def write(self, batch: Batch) -> Stored: ...

    async def write_async(self, batch: Batch) -> Stored: ...

    def close(self) -> None: ...


class InlineWriter:
    """Batches stored by this process's own writer thread (the library, the CLI, tests)."""

    def __init__(self, store: Store, graph: IdentityGraph) -> None:
        self.store = store
        self.graph = graph

    def start(self) -> None:
        pass

    def write(self, batch: Batch) -> Stored:
        return self.store.write(lambda conn: store_batch(conn, self.graph, batch))

    async def write_async(self, batch: Batch) -> Stored:
        return await asyncio.to_thread(self.write, batch)

    def close(self) -> None:
        pass


def _insert_events(conn: sqlite3.Connection, rows: list[EventRow]) -> None:
    """``INSERT_EVENT`` for validated rows, without re-checking ``events.type`` row by row.

    SQLite evaluates ``CHECK (type IN (<six names>))`` by building a temporary B-tree of the six
    names for every row (a constant list of more than two values in a CHECK is not cached between
    rows): ~5 µs per event on the single writer thread, more than the rest of the insert. ``_row``
    has already refused any other type, so CHECK constraints are off for this one statement (the
    flag is read when a statement is compiled: setting it recompiles, and switching it back makes
    every later statement enforce them again). NOT NULL and UNIQUE are not affected.

    The rows go in as plain tuples: sqlite3 reads a tuple subclass's parameters one ``__getitem__`` call at a
    time (a method lookup and an argument tuple each: about 30,000 instructions an event, 14% of the server's
    CPU, measured with ``bench/ingest.py --callgrind``); ``tuple(row)`` copies them in C.
    """
    conn.execute("PRAGMA ignore_check_constraints=ON")
    try:
        conn.executemany(INSERT_EVENT, [tuple(row) for row in rows])
    finally:
        conn.execute("PRAGMA ignore_check_constraints=OFF")


def _existing_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for part in chunked(ids):
        found.update(
            row[0] for row in conn.execute(f"SELECT message_id FROM events WHERE message_id IN ({marks(part)})", part)
        )
    return found


def make_writer(store: Store, settings: Settings, graph: IdentityGraph) -> BatchWriter:
    """The writer the settings ask for: the ingest writer process (``ingest_writer = "process"``, where a child
    can open the store), else this process's writer thread."""
    if settings.ingest_writer == "process":
        from cdp.ingest.writer import ProcessWriter

        if ProcessWriter.usable(settings):
            return ProcessWriter(settings)
    return InlineWriter(store, graph)
