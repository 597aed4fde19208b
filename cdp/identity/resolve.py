"""The full identity-resolution run (``cdp resolve``, and on a schedule).

1. Snapshot the identity graph, the deterministic links and the rows to match (one per CRM record,
   one per identified user's latest traits).
2. Train the Splink model if there is none or the data grew enough, else use the stored one.
3. Score all pairs, cluster deterministic links and strong matches under merge protection.
4. Map clusters onto existing profiles (stable ids) and apply the plan in ONE transaction: a run that
   fails or is killed leaves profiles, redirects and memberships exactly as they were.
5. Refresh unified and computed traits of the profiles that changed, in small transactions.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from cdp import outbox, record_ids
from cdp.chunks import chunked, marks
from cdp.errors import MatchModelMissing, ResolutionFailed
from cdp.hooks import Hook
from cdp.identity import evaluate, labels, matching, review
from cdp.identity.cluster import Edge, Facts, Graph, Node, Plan, changing, cluster, plan, summary
from cdp.identity.graph import IdentityGraph, new_profile_id
from cdp.identity.refresh import TraitRefresh, rowid_ranges
from cdp.identity.traits import identify_values
from cdp.normalize import HISTORICAL_BIRTHDAY
from cdp.quality import CANONICAL_COLUMNS
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import now_iso

log = logging.getLogger("cdp.identity")
Progress = Callable[[str], None]
# Canonical fields the matcher compares: trait name -> source_records column (= match row column).
_USER_FIELDS = dict(CANONICAL_COLUMNS)
_RECORD_FIELDS = {column: column for column in _USER_FIELDS.values()}
_FULL_NAMES = ("full_name", "fullname", "name", "full name")
"""Trait names read as a full name (split into first and last name where those are missing)."""


class _Dirty(Exception):
    """The graph changed under the run; snapshot again."""


@dataclass
class Snapshot:
    graph: Graph


class Resolution:
    def __init__(self, store: Store, settings: Settings, graph: IdentityGraph) -> None:
        self.store = store
        self.settings = settings
        self.graph = graph
        self.run_succeeded: Hook[[dict[str, Any]]] = Hook("identity.run_succeeded")  # with the run's summary

    # -- model -----------------------------------------------------------------------------------

    def latest_model(self) -> tuple[int, matching.MatchModel] | None:
        """The newest stored model and its version; None if there is none or it is outdated (written by
        an earlier cdp; the next resolve trains a new one)."""
        row = (
            self.store.reader()
            .execute("SELECT version, model FROM identity_models ORDER BY version DESC LIMIT 1")
            .fetchone()
        )
        if row is None:
            return None
        try:
            return int(row[0]), matching.MatchModel.from_json(row[1])
        except matching.OutdatedModel:
            return None  # written by an earlier cdp: the next resolve trains a new one

    def describe_model(self) -> dict[str, Any]:
        """The match model in use: version, kind (``trained`` or ``default``), rows, threshold and how it
        was chosen, comparisons with each level's weight, blocking rules. Raises `MatchModelMissing`."""
        row = (
            self.store.reader()
            .execute("SELECT version, created_at FROM identity_models ORDER BY version DESC LIMIT 1")
            .fetchone()
        )
        latest = self.latest_model()
        if row is None or latest is None:
            raise MatchModelMissing(
                "no match model yet: `cdp resolve` makes one once the store holds "
                f"{matching.MIN_DEFAULT_ROWS} records or identified users with names, emails or other fields to compare"
            )
        version, model = latest
        return {
            "version": version,
            "kind": model.kind,
            "created_at": row[1],
            "trained_rows": model.trained_rows,
            "threshold": model.threshold,
            "threshold_choice": model.metrics.get("threshold", {"method": "setting", "value": model.threshold}),
            "threshold_reason": _threshold_reason(model),
            "prior": model.prior,
            "fields": list(model.fields),
            "comparisons": model.metrics.get("comparisons", []),
            "blocking_rules": model.metrics.get("blocking_rules", []),
            "em": model.metrics.get("em", []),
            # pairs people labelled as one person, blended into m (`matching.blend_labelled_m`); null without
            "m_from_labels": model.metrics.get("m_from_labels"),
        }

    def train(
        self, rows: pd.DataFrame | None = None, scores: list[pd.DataFrame] | None = None
    ) -> tuple[int, matching.MatchModel]:
        """Train a new model version on the current rows and store it (``scores``: see `matching.train`)."""
        rows = self.match_rows() if rows is None else rows
        must, _cannot = labels.constraints(self.store.reader())  # people's match decisions move m (see train)
        started = time.perf_counter()
        model = matching.train(
            rows, threshold=self.settings.match_threshold, precision=self.settings.match_precision, scores=scores,
            labelled=must,
        )  # fmt: skip
        seconds = round(time.perf_counter() - started, 2)

        def store(conn: sqlite3.Connection) -> int:
            version = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM identity_models").fetchone()[0]
            conn.execute(
                "INSERT INTO identity_models (version, created_at, model, trained_rows, threshold, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    version,
                    now_iso(),
                    model.to_json(),
                    model.trained_rows,
                    model.threshold,
                    orjson.dumps({**model.metrics, "training_seconds": seconds}).decode(),
                ),
            )
            return int(version)

        return self.store.write(store), model

    # -- inputs ----------------------------------------------------------------------------------

    def match_rows(
        self,
        conn: sqlite3.Connection | None = None,
        *,
        records: list[tuple[str, str]] | None = None,
        users: list[str] | None = None,
    ) -> pd.DataFrame:
        """One row per CRM record and one per identified user's latest traits (all, or the ones named)."""
        conn = conn or self.store.reader()
        select = (
            f"SELECT {record_ids.sql_key()} AS unique_id, source, {', '.join(_RECORD_FIELDS)},"
            " traits FROM source_records"
        )
        if records is None and users is None:
            # In ranges of ids, each a short statement (its own snapshot): one statement over all records and
            # events held a snapshot for the whole read, and the WAL cannot restart past it. Rows that arrive
            # meanwhile are read or left for the next run.
            parts = [
                conn.execute(select + " WHERE id > ? AND id <= ?", bounds).fetchall()
                for bounds in rowid_ranges(conn, "source_records")
            ]
            record_frame = pd.DataFrame(
                [row for part in parts for row in part], columns=["unique_id", "source", *_RECORD_FIELDS, "traits"]
            )
            del parts
            identifies = [
                row
                for lo, hi in rowid_ranges(conn, "events")
                for row in conn.execute(
                    "SELECT user_id, traits, context, timestamp, id FROM events"
                    " WHERE id > ? AND id <= ? AND type = 'identify' AND user_id IS NOT NULL",
                    (lo, hi),
                ).fetchall()
            ]
            identifies.sort(key=lambda row: (row[3], row[4]))  # the latest traits last
        else:
            found = [
                conn.execute(select + " WHERE source = ? AND external_id = ?", key).fetchone() for key in records or []
            ]
            record_frame = pd.DataFrame(
                [r for r in found if r], columns=["unique_id", "source", *_RECORD_FIELDS, "traits"]
            )
            identifies = []
            for user in users or []:
                identifies += conn.execute(
                    "SELECT e.user_id, e.traits, e.context FROM identifiers i"
                    " JOIN events e ON e.profile_id = i.profile_id"
                    " WHERE i.type = 'user_id' AND i.value = ? AND e.user_id = ? AND e.type = 'identify'"
                    " ORDER BY e.timestamp, e.id",
                    (user, user),
                ).fetchall()
        record_frame = _with_trait_columns(record_frame, record_frame.pop("traits").tolist())
        latest: dict[str, dict[str, Any]] = {}
        for user_id, traits, context, *_ in identifies:
            values = identify_values(traits, context)
            row = latest.setdefault(user_id, {"unique_id": f"user_id:{user_id}", "source": "events"})
            for key, column in _USER_FIELDS.items():
                value = values.get(key)
                if isinstance(value, str) and value.strip():
                    row[column] = value
        frames = [record_frame]
        if latest:
            frames.append(pd.DataFrame(list(latest.values())))
        rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else record_frame
        for column in ("unique_id", "source", *_RECORD_FIELDS.values()):
            if column not in rows.columns:
                rows[column] = None
        return rows

    @staticmethod
    def _graph_rows(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
        """The graph's rows as they are, read inside the snapshot's transaction: only fetched here, and made into
        columns after it ended (SQLite cannot restart the WAL while a reader holds a snapshot; building the
        columns inside it held one for seconds when the machine was busy, while ingest kept writing)."""
        return (
            conn.execute("SELECT id, type, value, profile_id, shared FROM identifiers ORDER BY id").fetchall(),
            conn.execute("SELECT a, b, kind = 'alias' FROM identity_links ORDER BY id").fetchall(),
            conn.execute("SELECT identifier_id, type, value FROM identifier_attributes").fetchall(),
        )

    @staticmethod
    def _snapshot(read: tuple[list[Any], list[Any], list[Any]]) -> Snapshot:
        # A run may hold millions of identifiers: they are read into columns, not objects.
        rows, link_rows, attrs = read
        del read
        ids, types, values, profiles, shared = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 5
        rows.clear()
        type_codes, type_names = pd.factorize(np.array(types, dtype=object))
        profile_codes, profile_names = pd.factorize(np.array(profiles, dtype=object))
        del types, profiles
        graph_ids = np.array(ids, dtype=np.int64)
        links = np.array(link_rows, dtype=np.int64).reshape(-1, 3)
        link_rows.clear()
        attr_ids, attr_kinds, attr_values = (list(c) for c in zip(*attrs, strict=True)) if attrs else ([],) * 3
        attrs.clear()
        kind_codes, kind_names = pd.factorize(np.array(attr_kinds, dtype=object))
        value_codes, value_names = pd.factorize(np.array(attr_values, dtype=object))
        graph = Graph(
            ids=graph_ids,
            types=type_codes.astype(np.int64),
            type_names=[str(t) for t in type_names],
            values=values,
            profiles=profile_codes.astype(np.int64),
            profile_names=[str(p) for p in profile_names],
            shared=np.array(shared, dtype=bool),
            link_rows=np.empty((0, 2), dtype=np.int64),
            link_alias=np.empty(0, dtype=bool),
            attr_rows=np.empty(0, dtype=np.int64),
            attr_kinds=kind_codes.astype(np.int64),
            attr_kind_names=[str(k) for k in kind_names],
            attr_values=value_codes.astype(np.int64),
            attr_value_names=[str(v) for v in value_names],
        )
        ends = graph.rows_of(links[:, :2].ravel()).reshape(-1, 2)
        known = (ends >= 0).all(axis=1)  # a link to an identifier not in the graph links nothing
        graph.link_rows, graph.link_alias = ends[known], links[known, 2].astype(bool)
        attr_rows = graph.rows_of(attr_ids)
        keep = attr_rows >= 0
        graph.attr_rows, graph.attr_kinds, graph.attr_values = (
            attr_rows[keep],
            graph.attr_kinds[keep],
            graph.attr_values[keep],
        )
        return Snapshot(graph)

    # -- the run ---------------------------------------------------------------------------------

    def run(self, *, retrain: bool | None = None, progress: Progress | None = None) -> dict[str, Any]:
        say = progress or (lambda message: log.info(message))
        started = time.perf_counter()
        run_id = self.store.write(
            lambda conn: (
                conn.execute(
                    "INSERT INTO resolution_runs (started_at, status) VALUES (?, 'running')", (now_iso(),)
                ).lastrowid
            )
        )
        try:
            result = self._run(retrain, say)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.store.write(
                lambda conn: conn.execute(
                    "UPDATE resolution_runs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                    (now_iso(), message, run_id),
                )
            )
            if isinstance(exc, ResolutionFailed | matching.MatchingError):
                raise
            raise ResolutionFailed(f"the resolution run failed and changed nothing: {message}") from exc
        result["seconds"] = round(time.perf_counter() - started, 2)
        self.store.write(
            lambda conn: conn.execute(
                "UPDATE resolution_runs SET status = 'succeeded', finished_at = ?, summary = ? WHERE id = ?",
                (now_iso(), orjson.dumps(result).decode(), run_id),
            )
        )
        self.run_succeeded(result)
        return result

    def _run(self, retrain: bool | None, say: Progress) -> dict[str, Any]:
        rows = matching.prepare(self.match_rows())  # cleaned once, for training and prediction
        say(f"{len(rows)} rows to match")
        # The graph is read on another thread while DuckDB trains and scores (most of that time is spent
        # outside the GIL). Reading it after the rows is as before: the plan checks that nothing it
        # moves has moved since, and edges to identifiers that are not in the snapshot are left out.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdp-snapshot") as pool:
            reading = pool.submit(self._read_snapshot, warm=True)
            scored: list[pd.DataFrame] = []  # the rows scored while choosing a new model's threshold
            model_info = self._model_for(rows, retrain, say, scored)
            edges = doubtful = pd.DataFrame()
            if model_info is not None:
                version, model = model_info
                t0 = time.perf_counter()
                # Pairs from the lower of the support and review thresholds: links, the weaker pairs that may
                # corroborate them, and those below the match threshold that go to the review queue.
                floor = self._support_floor(model)
                review_at = min(self.settings.review_threshold, model.threshold)
                if scored:  # the same rows, the same model: keep the pairs from that floor
                    pairs = scored[0][scored[0]["match_probability"] >= min(floor, review_at)]
                else:
                    pairs = matching.predict(model, rows, threshold=min(floor, review_at))
                probability = pairs["match_probability"].to_numpy(dtype=np.float64)
                edges = pairs[probability >= floor].reset_index(drop=True)
                doubtful = pairs[(probability >= review_at) & (probability < model.threshold)].reset_index(drop=True)
                del pairs, probability
                links = int((edges["match_probability"] >= model.threshold).sum()) if len(edges) else 0
                say(
                    f"scored pairs with model v{version}: {links} matches, {len(edges) - links} corroborating"
                    f" pairs in {time.perf_counter() - t0:.1f}s"
                )
            matched = pd.Series(matching.content_hashes(rows), index=pd.Index(rows["unique_id"]))
            facts = matching.person_facts(rows)
            del rows  # not needed any more: free it before clustering (a million rows hold about a gigabyte)
            snap = reading.result()
        for attempt in range(3):
            try:
                stats = self._cluster_and_apply(snap, edges, matched, model_info, say, doubtful, facts)
            except _Dirty:
                say(f"the graph changed during the run; snapshotting again ({attempt + 1}/3)")
                snap = self._read_snapshot()
                continue
            del edges, snap
            say("plan applied; refreshing traits")
            stats["traits_refreshed"] = self.refresh_traits()
            return stats
        raise ResolutionFailed("the identity graph kept changing during the run; try again when ingest is quieter")

    def _read_snapshot(self, *, warm: bool = False) -> Snapshot:
        """The graph as of one moment, on a read connection of its own (closed afterwards; this may run
        on a worker thread, whose thread-local reader would outlive the run). With ``warm``, the
        clustering's imports are loaded first (on the worker thread, while DuckDB trains and scores)."""
        if warm:
            import scipy.sparse.csgraph  # noqa: F401
        conn = sqlite3.connect(self.store.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.settings.busy_timeout_ms)}")
            conn.execute("PRAGMA query_only=ON")
            conn.execute("BEGIN")
            try:
                read = self._graph_rows(conn)
            finally:
                conn.execute("COMMIT")
        finally:
            conn.close()
        return self._snapshot(read)

    def _support_floor(self, model: matching.MatchModel) -> float:
        """Pairs scored from here are kept for clustering: links (at the model's threshold) and the weaker
        pairs that may corroborate them (``match_support_threshold``)."""
        return min(self.settings.match_support_threshold, model.threshold)

    def _model_for(
        self, rows: pd.DataFrame, retrain: bool | None, say: Progress, scored: list[pd.DataFrame] | None = None
    ) -> tuple[int, matching.MatchModel] | None:
        current = self.latest_model()
        if retrain is False:
            return current
        grown = current is not None and len(rows) >= current[1].trained_rows * (1 + self.settings.retrain_growth)
        # A default model is replaced by a trained one as soon as there are rows enough for EM.
        outgrown = current is not None and current[1].kind == "default" and len(rows) >= matching.MIN_TRAINING_ROWS
        if retrain or current is None or grown or outgrown:
            if len(rows) < matching.MIN_DEFAULT_ROWS:
                if retrain:
                    raise matching.MatchingError(
                        f"{len(rows)} rows is too few for a match model;"
                        f" at least {matching.MIN_DEFAULT_ROWS} are needed"
                    )
                say(f"{len(rows)} rows: too few for a match model yet; deterministic links only")
                return current
            if len(rows) < matching.MIN_TRAINING_ROWS:
                say(
                    f"{len(rows)} rows: fewer than {matching.MIN_TRAINING_ROWS}, so the default model "
                    "(shipped m-probabilities; u and term frequencies from these rows)"
                )
            else:
                say("training the match model")
            try:
                version, model = self.train(rows, scored)
            except matching.MatchingError as exc:
                if retrain:
                    raise
                say(f"no match model: {exc}; deterministic links only")
                return current
            say(_describe(version, model))
            return version, model
        if current is not None:
            say(_describe(*current))
        return current

    def _cluster_and_apply(
        self,
        snap: Snapshot,
        edges: pd.DataFrame,
        matched: pd.Series,
        model_info: tuple[int, matching.MatchModel] | None,
        say: Progress,
        doubtful: pd.DataFrame | None = None,
        facts: dict[str, Facts] | None = None,
    ) -> dict[str, Any]:
        graph = snap.graph
        edge_list: list[Edge] = []
        ends = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0))
        has_row = np.zeros(len(graph), dtype=bool)  # identifiers that were match rows
        if len(matched):
            # Match rows are made of these identifiers (``type:value`` is their unique_id).
            matchable = np.flatnonzero(graph.matchable())
            keys = pd.Index([f"{graph.type_names[t]}:{graph.values[r]}" for r, t in
                             zip(matchable.tolist(), graph.types[matchable].tolist(), strict=True)])  # fmt: skip
            has_row[matchable[keys.isin(matched.index)]] = True
        if len(edges):
            left = keys.get_indexer(edges["unique_id_l"])
            right = keys.get_indexer(edges["unique_id_r"])
            found = (left >= 0) & (right >= 0)
            a, b = matchable[left[found]], matchable[right[found]]
            weight = edges["match_weight"].to_numpy(dtype=np.float64)[found]
            probability = edges["match_probability"].to_numpy(dtype=np.float64)[found]
            ends = (a, b, weight)
            edge_list = [
                Edge(int(x), int(y), w, p)
                for x, y, w, p in zip(
                    graph.ids[a].tolist(), graph.ids[b].tolist(), weight.tolist(), probability.tolist(), strict=True
                )
            ]
        # Ties between equally strong edges follow the match rows' content, not their ids (edges only join
        # match rows; other identifiers keep their ids).
        content = graph.ids.copy()
        if len(matched):
            where = keys.get_indexer(matched.index)
            content[matchable[where[where >= 0]]] = matched.to_numpy()[where >= 0]
        row_facts: dict[int, Facts] = {}
        if facts and len(matched):
            where = keys.get_indexer(pd.Index(list(facts)))
            row_facts = {int(matchable[w]): f for w, f in zip(where.tolist(), facts.values(), strict=True) if w >= 0}
        strong = self.settings.match_strong_threshold
        must, cannot = self._constraints(graph)
        link = model_info[1].threshold if model_info is not None else strong
        label, refused = cluster(
            graph, ends, self.graph.rules, strong_weight=math.log2(strong / (1 - strong)), matched=has_row,
            content=content, link_weight=math.log2(link / (1 - link)), must=must, cannot=cannot, facts=row_facts,
        )  # fmt: skip
        doubts = self._doubts(graph, label, refused, edges, doubtful, model_info)
        rows = changing(graph, label)
        nodes = graph.nodes(rows.tolist())
        root_of = dict(zip(graph.ids[rows].tolist(), graph.ids[label[rows]].tolist(), strict=True))
        result = plan(nodes, root_of, _ages(self.store.reader(), {n.profile_id for n in nodes}), new_profile_id)
        stats = summary(result, refused)
        say(f"plan: {stats}")
        by_id = {n.id: n for n in nodes}  # every identifier of a profile the plan changes
        # What the merge and split reasons need, made before the write transaction.
        members: dict[str, list[int]] = {}  # identifiers by the profile they had, for merged or split ones
        named = {gone for _, gone in result.merges} | {source for source, _ in result.splits}
        for i, node in by_id.items():
            if node.profile_id in named:
                members.setdefault(node.profile_id, []).append(i)
        strongest = _strongest(by_id, edge_list)
        now = now_iso()
        if len(edges) and model_info is not None:  # keep links, and corroborating pairs inside one profile
            keep = edges["match_probability"].to_numpy(dtype=np.float64) >= model_info[1].threshold
            keep[np.flatnonzero(found)[label[ends[0]] == label[ends[1]]]] = True
            edges = edges[keep]
        edge_rows = _edge_rows(edges, model_info[0], now) if model_info is not None else None

        def apply(c: sqlite3.Connection) -> None:
            self._apply(c, now, by_id, result, edge_rows, model_info, members, strongest)
            review.keep(c, doubts, replace=True)

        self.store.write(apply)
        stats["profiles"] = int(
            self.store.reader().execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
        )
        stats["match_edges"] = len(edge_list)
        stats["review_items"] = len(doubts)
        stats["labels"] = {"must_link": len(must), "cannot_link": len(cannot)}
        stats["model_version"] = model_info[0] if model_info else None
        return stats

    def _constraints(self, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
        """The human labels as (k, 2) arrays of graph rows (must-links, cannot-links); a label naming an
        identifier that is not in the graph (yet) constrains nothing."""
        conn = self.store.reader()
        must, cannot = labels.constraints(conn)
        wanted = {k for pair in must + cannot for k in pair}
        ids: dict[str, int] = {}
        for key in wanted:
            kind, _, value = key.partition(":")
            row = conn.execute("SELECT id FROM identifiers WHERE type = ? AND value = ?", (kind, value)).fetchone()
            if row is not None:
                ids[key] = int(row[0])

        def rows(pairs: list[tuple[str, str]]) -> np.ndarray:
            known = [(ids[a], ids[b]) for a, b in pairs if a in ids and b in ids]
            found = graph.rows_of(np.array(known, dtype=np.int64).ravel()).reshape(-1, 2)
            return found[(found >= 0).all(axis=1)]

        return rows(must), rows(cannot)

    def _doubts(
        self,
        graph: Graph,
        label: np.ndarray,
        refused: list[Any],
        edges: pd.DataFrame,
        doubtful: pd.DataFrame | None,
        model_info: tuple[int, matching.MatchModel] | None,
    ) -> list[review.Doubt]:
        """Pairs for the review queue: scored below the match threshold, or refused (not by a label), whose
        two sides ended in different clusters."""
        out: list[review.Doubt] = []
        version, threshold = (model_info[0], model_info[1].threshold) if model_info else (None, None)
        refusals = [r for r in refused if r.rule != "cannot_link"]
        ends = graph.rows_of(np.array([x for r in refusals for x in (r.a, r.b)], dtype=np.int64)).reshape(-1, 2)
        apart: list[tuple[Any, str, str]] = []
        # A refused link between identifiers that are not match rows (an email, a device) is shown as the
        # pair of records it would have joined: a match row of each side's cluster.
        matchable = graph.matchable()
        stand_in: dict[int, int] = {}
        needed = {int(label[z]) for x, y in ends.tolist() for z in (x, y) if z >= 0 and not matchable[z]}
        if needed:
            for row in np.flatnonzero(matchable & np.isin(label, list(needed))).tolist():
                stand_in.setdefault(int(label[row]), row)

        def shown(row: int) -> int:
            return row if matchable[row] else stand_in.get(int(label[row]), row)

        for r, (x, y) in zip(refusals, ends.tolist(), strict=True):
            if x >= 0 and y >= 0 and label[x] != label[y]:
                apart.append((r, _key(graph, shown(x)), _key(graph, shown(y))))
        scores = _scores(edges, {(min(a, b), max(a, b)) for _, a, b in apart})
        for r, a, b in apart:
            found = scores.get((min(a, b), max(a, b)))
            doubt = review.Doubt(a, b, review.reason_of(r.rule), r.message, threshold=threshold)
            if found is not None:
                doubt = review.Doubt(a, b, doubt.reason, r.message, found[0], found[1], threshold, version, found[2])
            out.append(doubt)
        if doubtful is not None and len(doubtful) and model_info is not None:
            rows = np.flatnonzero(graph.matchable())
            uid = pd.Index([_key(graph, r) for r in rows.tolist()])
            left, right = uid.get_indexer(doubtful["unique_id_l"]), uid.get_indexer(doubtful["unique_id_r"])
            found = (left >= 0) & (right >= 0)
            different = np.zeros(len(doubtful), dtype=bool)
            different[found] = label[rows[left[found]]] != label[rows[right[found]]]
            picked = doubtful[different]
            if len(picked) > review.MAX_ITEMS:  # only the most informative can be kept: build no more
                assert threshold is not None
                distance = picked["match_weight"].to_numpy(dtype=np.float64) - math.log2(threshold / (1 - threshold))
                picked = picked.iloc[np.argsort(np.abs(distance), kind="stable")[: review.MAX_ITEMS]]
            names = [c for c in picked.columns if c.startswith("mw_")]
            for row in picked.itertuples(index=False):
                contributions = orjson.dumps({c[3:]: round(float(getattr(row, c)), 3) for c in names}).decode()
                out.append(review.Doubt(
                    str(row.unique_id_l), str(row.unique_id_r), "below_threshold", "scored below the match threshold",
                    float(row.match_weight), float(row.match_probability), threshold, version, contributions,
                ))  # fmt: skip
        return out

    def _apply(
        self,
        conn: sqlite3.Connection,
        now: str,
        by_id: dict[int, Node],
        result: Plan,
        edge_rows: list[tuple[Any, ...]] | None,
        model_info: tuple[int, matching.MatchModel] | None,
        members: dict[str, list[int]],
        strongest: dict[tuple[str, str], Edge],
    ) -> None:
        self.store.after_commit(self.graph.invalidate)
        # Nothing may have moved since the snapshot for the identifiers this plan touches.
        touched = set(result.moves)
        if touched:
            ids = list(touched)
            for part in chunked(ids):
                current = conn.execute(
                    f"SELECT id, profile_id FROM identifiers WHERE id IN ({','.join('?' * len(part))})", part
                ).fetchall()
                if any(by_id[i].profile_id != p for i, p in current):
                    raise _Dirty
        for pid in result.new_profiles:
            conn.execute("INSERT INTO profiles (id, created_at, updated_at) VALUES (?, ?, ?)", (pid, now, now))
        conn.executemany(
            "UPDATE identifiers SET profile_id = ? WHERE id = ?", [(pid, i) for i, pid in result.moves.items()]
        )
        # One statement per kind over all merges (a plan never merges a profile that another of its merges
        # keeps, so the order between kinds does not matter), then the hooks merge by merge.
        merges = result.merges
        conn.executemany(
            "UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ? OR merged_into = ?",
            [(survivor, now, gone, gone) for survivor, gone in merges],
        )
        conn.executemany(
            "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at)"
            " VALUES ('merge', ?, ?, 'resolution', ?, ?)",
            [
                (
                    survivor,
                    gone,
                    orjson.dumps(_why(by_id, members, strongest, survivor, gone, model_info)).decode(),
                    now,
                )
                for survivor, gone in merges
            ],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen)"
            " SELECT ?, group_id, first_seen FROM profile_groups WHERE profile_id = ?",
            merges,
        )
        conn.executemany("DELETE FROM profile_groups WHERE profile_id = ?", [(gone,) for _, gone in merges])
        self.graph.profiles_merged(conn, merges)
        splits = []
        for source, target in result.splits:
            moved = sorted(by_id[i].key for i in members.get(source, ()) if result.moves.get(i) == target)
            conn.execute(
                "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at)"
                " VALUES ('split', ?, ?, 'resolution', ?, ?)",
                (source, target, orjson.dumps({"identifiers": moved[:50], "moved": len(moved)}).decode(), now),
            )
            splits.append((source, target, moved))
        outbox.write_splits(conn, splits)  # subscribers hear of splits as of merges
        # Events and records follow the identifier that anchors them.
        event_moves = [
            (pid, by_id[i].profile_id, by_id[i].value) for i, pid in result.moves.items() if by_id[i].type == "user_id"
        ]
        anon_moves = [
            (pid, by_id[i].profile_id, by_id[i].value)
            for i, pid in result.moves.items()
            if by_id[i].type == "anonymous_id"
        ]
        records = _record_ids(conn, [by_id[i].value for i in result.moves if by_id[i].type == "record"])
        record_moves = [
            (pid, records[by_id[i].value])
            for i, pid in result.moves.items()
            if by_id[i].type == "record" and by_id[i].value in records
        ]
        # (events are indexed by profile, so each move looks only at the profile it leaves)
        conn.executemany("UPDATE events SET profile_id = ? WHERE profile_id = ? AND user_id = ?", event_moves)
        conn.executemany(
            "UPDATE events SET profile_id = ? WHERE profile_id = ? AND user_id IS NULL AND anonymous_id = ?", anon_moves
        )
        conn.executemany("UPDATE source_records SET profile_id = ? WHERE id = ?", record_moves)
        changed = {pid for pid in result.moves.values()} | {s for s, _ in result.merges}
        conn.executemany("UPDATE profiles SET updated_at = ? WHERE id = ?", [(now, p) for p in changed])
        # This run's matches replace the last run's.
        if edge_rows is not None:
            conn.execute("DELETE FROM match_edges")
            conn.executemany(
                "INSERT OR REPLACE INTO match_edges (node_l, node_r, match_weight, match_probability,"
                " model_version, contributions, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                edge_rows,
            )

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, truth: Path) -> dict[str, Any]:
        """Pairwise precision/recall/F1, adjusted Rand and B-cubed of the current profiles."""
        predicted = evaluate.clusters_of(
            self.store.reader().execute(
                "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id) FROM source_records r"
                " JOIN profiles p ON p.id = r.profile_id"
            )
        )
        return evaluate.score(predicted, evaluate.read_truth(truth))

    # -- traits ----------------------------------------------------------------------------------

    def refresh_traits(self, chunk: int = 2000, dense_chunk: int = 20_000) -> int:
        """Recompute unified and computed traits of profiles with new records, traits or events
        (see `cdp.identity.refresh`); returns how many profiles were refreshed."""
        return TraitRefresh(self.store, self.settings).run(chunk, dense_chunk)


def _key(graph: Graph, row: int) -> str:
    return f"{graph.type_names[graph.types[row]]}:{graph.values[row]}"


def _scores(edges: pd.DataFrame, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, str]]:
    """(match weight, probability, partial weights JSON) of the scored pairs wanted."""
    if not wanted or not len(edges):
        return {}
    lefts = {a for a, _ in wanted} | {b for _, b in wanted}
    pick = edges[edges["unique_id_l"].isin(lefts) | edges["unique_id_r"].isin(lefts)]
    names = [c for c in pick.columns if c.startswith("mw_")]
    out: dict[tuple[str, str], tuple[float, float, str]] = {}
    for row in pick.itertuples(index=False):
        a, b = str(row.unique_id_l), str(row.unique_id_r)
        key = (min(a, b), max(a, b))
        if key in wanted:
            contributions = orjson.dumps({c[3:]: round(float(getattr(row, c)), 3) for c in names}).decode()
            out[key] = (float(row.match_weight), float(row.match_probability), contributions)
    return out


def _threshold_reason(model: matching.MatchModel) -> str:
    chosen = model.metrics.get("threshold", {})
    if chosen.get("method") == "estimated precision":
        expected, target = chosen.get("expected_precision"), chosen.get("target_precision")
        return f"chosen for expected precision {expected} (target {target})"
    return "from CDP_MATCH_THRESHOLD"


def _describe(version: int, model: matching.MatchModel) -> str:
    reason = _threshold_reason(model)
    labelled = model.metrics.get("m_from_labels")
    moved = f"; m-probabilities moved by {labelled['pairs']} labelled match pairs" if labelled else ""
    return f"model v{version} ({model.kind}, {model.trained_rows} rows): threshold {model.threshold} {reason}{moved}"


@functools.lru_cache(maxsize=4096)
def _trait_column(key: str) -> str | None:
    """The match-row column for an extra trait (``x_<name>``), ``full_name`` for a full name, or None for
    a trait the matcher does not read (canonical fields, nested values)."""
    if not isinstance(key, str) or key in CANONICAL_COLUMNS or key.startswith("address") or key == "source":
        return None
    if key.lower() in _FULL_NAMES:
        return "full_name"
    if key == HISTORICAL_BIRTHDAY:
        return key
    clean = "".join(ch if ch.isalnum() else "_" for ch in key.lower()).strip("_")
    return f"x_{clean}"[:60] if clean and clean.isascii() else None


def _with_trait_columns(frame: pd.DataFrame, traits: list[str | None]) -> pd.DataFrame:
    """``frame`` with a column per scalar trait of the records' ``traits`` JSON (see `_trait_column`)."""
    columns: dict[str, list[str | None]] = {}
    for i, text in enumerate(traits):
        if not text or text == "{}":
            continue
        for key, value in orjson.loads(text).items():
            column = _trait_column(key)
            if column is None or isinstance(value, bool) or not isinstance(value, str | int | float):
                continue
            values = columns.get(column)
            if values is None:
                values = columns[column] = [None] * len(traits)
            values[i] = str(value)
    historical = columns.pop(HISTORICAL_BIRTHDAY, None)
    if historical is not None:  # a birthday before 1850 is no profile trait, but it is evidence
        frame["birthday"] = frame["birthday"].where(frame["birthday"].notna(), pd.Series(historical, index=frame.index))
    for column, values in columns.items():
        frame[column] = values
    return frame


def _edge_rows(edges: pd.DataFrame, version: int, now: str) -> list[tuple[Any, ...]]:
    """match_edges rows (made before the write transaction, which then only inserts them)."""
    if not len(edges):
        return []
    names = [c[3:] for c in edges.columns if c.startswith("mw_")]
    weights = np.round(edges[[f"mw_{name}" for name in names]].to_numpy(dtype=np.float64), 3).tolist()
    contributions = [orjson.dumps(dict(zip(names, row, strict=True))).decode() for row in weights]
    return list(
        zip(
            edges["unique_id_l"].tolist(),
            edges["unique_id_r"].tolist(),
            edges["match_weight"].astype("float64").tolist(),
            edges["match_probability"].astype("float64").tolist(),
            [version] * len(edges),
            contributions,
            [now] * len(edges),
            strict=True,
        )
    )


def _ages(conn: sqlite3.Connection, profile_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """(created_at, rowid) of each profile: the oldest survives a merge."""
    wanted, out = list(profile_ids), {}
    for part in chunked(wanted):
        for pid, created, rowid in conn.execute(
            f"SELECT id, created_at, rowid FROM profiles WHERE id IN ({','.join('?' * len(part))})",
            part,
        ):
            out[pid] = (created, rowid)
    return out


def _record_ids(conn: sqlite3.Connection, values: Iterable[str]) -> dict[str, int]:
    """source_records.id of record identifier values (`cdp.record_ids`), read source by source, many external
    ids a statement."""
    out: dict[str, int] = {}
    by_source: dict[str, dict[str, str]] = defaultdict(dict)
    for value in values:
        parts = record_ids.parse(value)
        if parts is not None:
            by_source[parts[0]][parts[1]] = value
    for source, externals in by_source.items():
        for part in chunked(list(externals)):
            for rid, external in conn.execute(
                f"SELECT id, external_id FROM source_records WHERE source = ? AND external_id IN ({marks(part)})",
                (source, *part),
            ):
                out[externals[external]] = int(rid)
    return out


def _strongest(by_id: dict[int, Node], edges: list[Edge]) -> dict[tuple[str, str], Edge]:
    """The strongest match edge between each two profiles (by the profiles the identifiers had before
    the run; the first of equally strong edges wins)."""
    best: dict[tuple[str, str], Edge] = {}
    for edge in edges:
        left, right = by_id.get(edge.a), by_id.get(edge.b)
        if left is None or right is None or left.profile_id == right.profile_id:
            continue
        key = (min(left.profile_id, right.profile_id), max(left.profile_id, right.profile_id))
        found = best.get(key)
        if found is None or edge.weight > found.weight:
            best[key] = edge
    return best


def _why(
    by_id: dict[int, Node],
    members: dict[str, list[int]],
    strongest: dict[tuple[str, str], Edge],
    survivor: str,
    gone: str,
    model_info: tuple[int, matching.MatchModel] | None,
) -> dict[str, Any]:
    """The strongest match edge between the two profiles' identifiers, if any (else shared identifiers).

    ``members``: identifier ids by the profile they had before the run; ``strongest``: see `_strongest`.
    """
    edge = strongest.get((min(survivor, gone), max(survivor, gone)))
    if edge is None:
        return {"evidence": "identifier", "identifiers": sorted(by_id[i].key for i in members.get(gone, ()))[:20]}
    why = {
        "evidence": "probabilistic",
        "model_version": model_info[0] if model_info else None,
        "match_weight": round(edge.weight, 3),
        "match_probability": round(edge.probability, 6),
        "pair": [by_id[edge.a].key, by_id[edge.b].key],
    }
    if model_info is not None and edge.probability < model_info[1].threshold:
        why["evidence"] = "corroborated"  # no pair reached the threshold; several between them agree
    return why
