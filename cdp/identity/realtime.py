"""Real-time fuzzy linking: new CRM records and identified users are scored against everyone else
with the stored model in micro-batches, so a fuzzy match appears within seconds, not at the next
full run. Matches go through the same merge protection as the full run (limits, chaining guard).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from cdp import record_ids
from cdp.debounce import Debouncer
from cdp.identity import labels, matching, review
from cdp.identity.cluster import apart, chain_support_needed
from cdp.identity.graph import GraphTxn, IdentityGraph
from cdp.identity.resolve import Resolution
from cdp.store import Store
from cdp.timeutil import now_iso

if TYPE_CHECKING:
    from cdp.ingest.rows import EventRow

log = logging.getLogger("cdp.identity")


class RealtimeMatcher:
    def __init__(self, store: Store, graph: IdentityGraph, resolution: Resolution, interval: float = 1.0) -> None:
        self.store = store
        self.graph = graph
        self.resolution = resolution
        self.interval = interval
        self._pending: set[tuple[str, ...]] = set()  # ("record", source, external_id) or ("user_id", id)
        self._lock = threading.Lock()
        self._debouncer = Debouncer("cdp-realtime-matcher", self.link_pending, interval, interval * 5)
        self._index: matching.MatchIndex | None = None
        self._model_version: int | None = None
        self._model: matching.MatchModel | None = None

    # -- queue -----------------------------------------------------------------------------------

    def enqueue(self, nodes: Iterable[tuple[str, ...]]) -> None:
        with self._lock:
            self._pending.update(nodes)
        self._debouncer.poke()

    def on_records(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        marks = ",".join("?" * len(ids))
        found = conn.execute(f"SELECT source, external_id FROM source_records WHERE id IN ({marks})", ids)
        self.enqueue(("record", s, e) for s, e in found)

    def on_events(self, rows: list[EventRow]) -> None:
        users = [("user_id", r.user_id) for r in rows if r.type == "identify" and r.user_id and (r.traits or r.context)]
        if users:
            self.enqueue(users)

    # -- worker ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._debouncer.start()

    def stop(self) -> None:
        self._debouncer.stop()
        if self._index is not None:
            self._index.close()
            self._index = None

    def link_pending(self) -> dict[str, int]:
        """Score the queued nodes now; returns how many were scored, matched and merged."""
        with self._lock:
            keys, self._pending = sorted(self._pending), set()
        if not keys:
            return {"scored": 0, "matches": 0, "merged": 0}
        latest = self.resolution.latest_model()
        if latest is None:
            return {"scored": 0, "matches": 0, "merged": 0}
        if latest[0] != self._model_version or self._index is None:
            if self._index is not None:
                self._index.close()
            self._model_version, self._model = latest
            # Everyone else, loaded once: later micro-batches only add their own rows.
            self._index = matching.MatchIndex(self._model, self.resolution.match_rows())
        new = self._rows_for(keys)
        if new.empty:
            return {"scored": 0, "matches": 0, "merged": 0}
        assert self._model is not None
        review_at = min(self.resolution.settings.review_threshold, self._model.threshold)
        pairs = self._index.predict(new, threshold=review_at)
        pairs = pairs[pairs["unique_id_l"] != pairs["unique_id_r"]]  # an updated row against its old self
        links = (pairs["match_probability"] >= self._model.threshold).to_numpy(dtype=bool)
        edges, doubtful = pairs[links], pairs[~links]
        self._index.upsert(new)
        merged = self.store.write(lambda conn: self._apply(conn, edges, doubtful)) if len(pairs) else 0
        return {"scored": len(new), "matches": len(edges), "merged": merged, "doubtful": len(doubtful)}

    def _rows_for(self, keys: list[tuple[str, ...]]) -> pd.DataFrame:
        return self.resolution.match_rows(
            records=[(k[1], k[2]) for k in keys if k[0] == "record"],
            users=[k[1] for k in keys if k[0] == "user_id"],
        )

    def _apply(self, conn: sqlite3.Connection, edges: pd.DataFrame, doubtful: pd.DataFrame | None = None) -> int:
        """Merge the matches (strongest first) under merge protection, the chaining guard and the human
        labels (a cannot-link between the two profiles refuses the merge); keep the doubtful pairs and the
        refused links whose sides are in different profiles in the review queue."""
        assert self._model_version is not None
        txn = GraphTxn(conn)
        now = now_iso()
        merged = 0
        doubts: list[review.Doubt] = []
        threshold = self._model.threshold if self._model is not None else None
        cannot = (
            conn.execute("SELECT 1 FROM identity_labels WHERE decision = 'no_match' LIMIT 1").fetchone() is not None
        )
        contribution_columns = [c for c in edges.columns if c.startswith("mw_")]

        def doubt(row: Any, reason: str, message: str) -> review.Doubt:
            return review.Doubt(
                str(row.unique_id_l), str(row.unique_id_r), reason, message, float(row.match_weight),
                float(row.match_probability), threshold, self._model_version,
                orjson.dumps({c[3:]: round(float(getattr(row, c)), 3) for c in contribution_columns}).decode(),
            )  # fmt: skip

        if doubtful is not None:
            for row in doubtful.itertuples(index=False):
                a = txn.identifier(*str(row.unique_id_l).split(":", 1))
                b = txn.identifier(*str(row.unique_id_r).split(":", 1))
                if a is not None and b is not None and txn.live(a[1]) != txn.live(b[1]):
                    doubts.append(doubt(row, "below_threshold", "scored below the match threshold"))
        for row in edges.sort_values("match_weight", ascending=False).itertuples(index=False):
            left, right = str(row.unique_id_l), str(row.unique_id_r)
            conn.execute(
                "INSERT OR REPLACE INTO match_edges (node_l, node_r, match_weight, match_probability, model_version,"
                " contributions, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    *sorted((left, right)),
                    float(row.match_weight),
                    float(row.match_probability),
                    self._model_version,
                    orjson.dumps({c[3:]: round(float(getattr(row, c)), 3) for c in contribution_columns}).decode(),
                    now,
                ),
            )
            a = txn.identifier(*left.split(":", 1))
            b = txn.identifier(*right.split(":", 1))
            if a is None or b is None:
                continue
            pa, pb = txn.live(a[1]), txn.live(b[1])
            if pa == pb:
                continue
            if cannot and labels.cannot_link_between(
                conn, labels.profile_keys(conn, pa), labels.profile_keys(conn, pb)
            ):
                continue  # a person said these are different people
            decision = self.graph.rules.check(txn.counts(pa), txn.counts(pb), {}, {}, attributes=False)
            strong = float(row.match_probability) >= self.resolution.settings.match_strong_threshold
            if not decision.ok:
                doubts.append(doubt(row, "merge_protection", decision.message))
                continue
            why = self._apart(conn, pa, pb)
            if why is not None:
                doubts.append(doubt(row, "merge_protection", why))
                continue
            if not strong and self._chains(conn, pa, pb):
                doubts.append(doubt(row, "chaining", "the chaining guard refused: too few record pairs match"))
                continue
            self.graph.merge(
                conn, pa, pb, "probabilistic",
                {"model_version": self._model_version, "match_weight": round(float(row.match_weight), 3),
                 "match_probability": round(float(row.match_probability), 6), "pair": [left, right]},
                now, txn,
            )  # fmt: skip
            merged += 1
        if merged:
            self.store.after_commit(self.graph.invalidate)
        if doubts:
            review.keep(conn, doubts, replace=False)
        return merged

    def _apart(self, conn: sqlite3.Connection, pa: str, pb: str) -> str | None:
        """Why the merge would put two people in one profile (`cluster.apart`), if it would: what the full
        run's clustering asks of every join."""

        def facts(pid: str) -> list[Any]:
            found = conn.execute(
                "SELECT type, value FROM identifiers WHERE profile_id = ? AND type IN ('record', 'user_id')", (pid,)
            ).fetchall()
            records = [r for t, v in found if t == "record" and (r := record_ids.parse(str(v))) is not None]
            users = [str(v) for t, v in found if t == "user_id"]
            rows = self.resolution.match_rows(conn, records=records, users=users)
            return list(matching.person_facts(matching.prepare(rows)).values()) if len(rows) else []

        why = apart(facts(pa), facts(pb))
        return None if why is None else why.message

    @staticmethod
    def _chains(conn: sqlite3.Connection, pa: str, pb: str, density: float = 0.5) -> bool:
        """Would joining these profiles rest on too few record matches (see cluster.cluster)? Asked only of
        an edge weaker than ``match_strong_threshold``: one strong match may join two profiles."""

        def nodes(pid: str) -> list[str]:
            return [
                f"{t}:{v}"
                for t, v in conn.execute(
                    "SELECT type, value FROM identifiers WHERE profile_id = ? AND type IN ('record', 'user_id')", (pid,)
                )
            ]

        left, right = nodes(pa), nodes(pb)
        if len(left) < 2 or len(right) < 2:
            return False
        ml, mr = ",".join("?" * len(left)), ",".join("?" * len(right))
        support = conn.execute(
            f"SELECT count(*) FROM match_edges WHERE (node_l IN ({ml}) AND node_r IN ({mr}))"
            f" OR (node_l IN ({mr}) AND node_r IN ({ml}))",
            [*left, *right, *right, *left],
        ).fetchone()[0]
        return bool(support < chain_support_needed(len(left), len(right), density))
