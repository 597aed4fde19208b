"""How the identity graph is connected to the rest of the house: one function, called by the facade
(``cdp.core``) and by the ingest writer process, so both keep the same consequences of a merge.

Kept light (SQLite and orjson): the writer process imports it without DuckDB, pandas or scikit-learn.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cdp import outbox
from cdp.identity.graph import IdentityGraph
from cdp.privacy import consent
from cdp.segments import runs
from cdp.settings import Settings
from cdp.store import Store


def on_merges(conn: sqlite3.Connection, merges: Sequence[tuple[str, str]]) -> None:
    """In the merging transaction: memberships follow each (survivor, gone) merge; subscribers hear of it."""
    consent.follow_merges(conn, merges)
    runs.follow_merges(conn, merges)
    outbox.write_merges(conn, merges)


def identity_graph(store: Store, settings: Settings) -> IdentityGraph:
    """The store's identity graph: its cache forgets other processes' identity changes, and merges move
    memberships and write ``profile.merged`` outbox rows."""
    graph = IdentityGraph(settings, after_commit=store.after_commit)
    store.external_change.connect(graph.on_external_change)
    graph.profiles_merged.connect(on_merges)
    return graph
