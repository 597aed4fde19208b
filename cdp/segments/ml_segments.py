"""Machine-learned segments (``type`` ``cluster`` or ``propensity``): train, score, write memberships.

The algorithms (features, clustering, propensity, plots) are ``cdp.ml``'s; this module runs them as segments.
A run reads features in a DuckDB worker process (``cdp.duckdb_worker``), trains in this process, and
writes everything it changes (the model, child segments, memberships, enter/exit rows, history, outbox
rows and scores) in ONE SQLite transaction: a run that fails or is interrupted leaves the previous model,
scores and memberships as they were, and its error is in the segment's history.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson

from cdp.duckdb_worker import DuckDBWorker, attach_sql
from cdp.errors import CDPError, InvalidModel, ModelNotTrained, NotEnoughData
from cdp.ml.features import FeatureSpec, LocalQuery, build, events_sql, label_sql, resolve
from cdp.ml.plot import check_format, cluster_figure, profile_figure, render
from cdp.ml.scores import score_path, score_trait
from cdp.segments import rules
from cdp.segments.engine import Engine, MemberList, RunResult
from cdp.store import Store
from cdp.timeutil import format_ts, parse_ts, utcnow

log = logging.getLogger("cdp.ml")
ML_TYPES = ("cluster", "propensity")


class MLSegments:
    def __init__(self, store: Store, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        self._models: dict[int, dict[str, Any]] = {}

    # -- definitions -----------------------------------------------------------------------------

    def check(self, kind: str, model: Mapping[str, Any] | None, select: Mapping[str, Any] | None) -> None:
        """Validate a definition's ``model``/``select`` and that the store can train it (4xx otherwise)."""
        from cdp.ml import cluster, propensity

        if model is None:
            raise InvalidModel(f"a {kind} segment needs a model", {"path": "/model"})
        conn = self.store.reader()
        profiles = conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0]
        if kind == "cluster":
            if select is not None:
                raise InvalidModel("select is for propensity segments; a cluster segment has none", {"path": "/select"})
            params = cluster.check_params(model)
            needed = cluster.min_profiles(params)
            if profiles < needed:
                raise NotEnoughData(
                    f"the store has {profiles} profiles; this cluster model needs at least {needed}."
                    " Load data first (or lower k)",
                    {"path": "/model", "profiles": profiles, "needed": needed},
                )
            return
        p = propensity.check_params(model)
        propensity.check_select(select)
        if p.filter is not None:
            _filter_rule(p.filter)
        found = conn.execute(
            "SELECT 1 FROM events WHERE type = 'track' AND event = ? LIMIT 1", (p.target_event,)
        ).fetchone()
        if not found:
            raise NotEnoughData(
                f"no {p.target_event!r} event has been stored, so there is nothing to learn when it happens."
                " Check the event name (it is case-sensitive) or send such events first",
                {"path": "/model/target_event", "target_event": p.target_event},
            )

    # -- runs --------------------------------------------------------------------------------------

    @contextmanager
    def _query(self, with_traits: bool) -> Any:
        traits = "traits" if with_traits else "'{}' AS traits"
        worker = DuckDBWorker(
            [
                attach_sql(self.store.path),
                "CREATE TEMP TABLE events AS " + events_sql("db.events"),
                f"CREATE TEMP TABLE profiles AS SELECT id, {traits} FROM db.profiles WHERE merged_into IS NULL",
            ]
        )
        try:
            yield worker
        finally:
            worker.close()

    def run(self, segment: dict[str, Any], *, trigger: str) -> tuple[list[RunResult], Exception | None]:
        """Train and apply one ML segment; a failure is recorded in its history and returned."""
        started, started_at = time.perf_counter(), format_ts(utcnow())
        definition = orjson.loads(segment["definition"])
        try:
            if segment["type"] == "cluster":
                results = self._run_cluster(segment, definition, trigger, started, started_at)
            else:
                results = self._run_propensity(segment, definition, trigger, started, started_at)
            failed = [r for r in results if r.status == "failed"]
            return results, (RuntimeError(failed[0].error) if failed else None)
        except Exception as exc:
            if not isinstance(exc, CDPError):
                log.exception("ML segment %s failed", segment["key"])
            message = exc.message if isinstance(exc, CDPError) else f"{type(exc).__name__}: {exc}"
            result = self.engine.record_failure(
                segment, trigger=trigger, started=started, started_at=started_at, error=message
            )
            return [result], exc

    def _run_cluster(
        self, segment: dict[str, Any], definition: dict[str, Any], trigger: str, started: float, started_at: str
    ) -> list[RunResult]:
        from cdp.ml import cluster

        key = segment["key"]
        params = cluster.check_params(definition.get("model") or {})
        now = utcnow()
        with self._query(_wants_traits(params.features)) as query:
            spec = resolve(params.features, query, now)
            matrix = build(query, spec, now)
        children = self._children(key)
        previous = [c["cluster"]["centroid"] for c in children if "cluster" in c and not c["cluster"]["retired"]]
        warm = (
            np.asarray([[centroid[name] for name in spec.names] for centroid in previous])
            if previous and all(set(centroid) == set(spec.names) for centroid in previous)
            else None
        )
        latest = self._latest(key)
        last_model = None
        if latest is not None and latest[1] == "cluster" and orjson.loads(latest[3]) == spec.to_json():
            last_model = self._load_model(latest[0])["artifact"]["fitted"]
        result = cluster.fit(matrix.X, params, warm, last_model)
        fitted = result.fitted
        old = {c["cluster"]["number"]: c["cluster"]["centroid"] for c in children if "cluster" in c}
        raw = fitted.raw_centroids()
        numbers = cluster.match(raw, spec.names, old, fitted.scaler)
        was = self._previous_index(key, numbers, matrix.ids)
        result.labels = fitted.keep_previous(matrix.X, result.labels, was)
        sizes = np.bincount(result.labels, minlength=len(raw))
        names = cluster.describe(fitted.centroids, sizes.tolist(), spec.features)
        # A cluster whose members are those of the last run keeps its name (the clock's drift of days-since
        # features can move a centroid across a naming threshold with no new data).
        old_names = {c["cluster"]["number"]: c["name"] for c in children if "cluster" in c}
        for index, number in numbers.items():
            if number in old_names and np.array_equal(was == index, result.labels == index):
                names[index] = old_names[number]
        n = len(matrix.ids)
        units = original_units(matrix.X, spec.features)
        now_text = format_ts(utcnow())
        child_rows: list[dict[str, Any]] = []
        changes: list[tuple[dict[str, Any], set[str]]] = []
        active = set()
        for index in range(len(raw)):
            number = numbers[index]
            active.add(number)
            child_key = f"{key}.{number}"
            info = {
                "number": number,
                "parent": key,
                "centroid": {name: round(float(v), 6) for name, v in zip(spec.names, raw[index], strict=True)},
                "size": int(sizes[index]),
                "share": round(float(sizes[index]) / n, 4) if n else 0.0,
                "retired": False,
                # the cluster's feature means in original units (days, orders, dollars)
                "profile": _means(units[result.labels == index], spec.names),
            }
            child = {"key": child_key, "name": names[index], "type": "cluster", "cluster": info}
            child_rows.append(child)
            changes.append((child, set(matrix.ids[result.labels == index].tolist())))
        for c in children:  # clusters that did not come back: their members exit; the key is kept for reuse
            if c["cluster"]["number"] not in active:
                info = {**c["cluster"], "size": 0, "share": 0.0, "retired": True}
                child = {"key": c["key"], "name": c["name"], "type": "cluster", "cluster": info}
                child_rows.append(child)
                changes.append((child, set()))
        warning = cluster.quality_warning(result.metrics)
        metrics = {
            **result.metrics,
            "quality": cluster.quality_summary(result.metrics, warning),
            "population": _means(units, spec.names),
            "clusters": [
                {
                    "key": c["key"],
                    "name": c["name"],
                    "size": c["cluster"]["size"],
                    "share": c["cluster"]["share"],
                    "profile": c["cluster"]["profile"],
                }
                for c in child_rows
                if not c["cluster"]["retired"]
            ],
        }
        artifact = {"fitted": fitted, "numbers": [numbers[i] for i in range(len(raw))], "plot": result.plot}

        def before(conn: sqlite3.Connection) -> None:
            for child in child_rows:
                conn.execute(
                    "INSERT INTO segments (key, name, description, type, parent_key, definition, schedule, created_at,"
                    " updated_at) VALUES (?, ?, ?, 'cluster', ?, ?, NULL, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET name = excluded.name, definition = excluded.definition,"
                    " updated_at = excluded.updated_at",
                    (
                        child["key"],
                        child["name"],
                        f"Cluster {child['cluster']['number']} of {key}",
                        key,
                        orjson.dumps(child).decode(),
                        now_text,
                        now_text,
                    ),
                )
            _save_model(conn, key, "cluster", spec, params.to_json(), metrics, artifact, now_text)

        # The cluster segment itself holds the union of its clusters (every profile clustered), so its size,
        # members and history add up; its run carries the quality warning, if any.
        results = self.engine.apply(
            [({"key": key, "name": segment["name"]}, set(matrix.ids.tolist()))]
            + [({"key": c["key"], "name": c["name"]}, m) for c, m in changes],
            trigger=trigger,
            started=started,
            started_at=started_at,
            before=before,
            notes={key: warning} if warning else None,
        )
        if any(r.status == "failed" for r in results):
            raise RuntimeError(next(r.error for r in results if r.status == "failed"))
        return results

    def _run_propensity(
        self, segment: dict[str, Any], definition: dict[str, Any], trigger: str, started: float, started_at: str
    ) -> list[RunResult]:
        from cdp.ml import propensity

        key = segment["key"]
        params = propensity.check_params(definition.get("model") or {})
        select = propensity.check_select(definition.get("select"))
        now = utcnow()
        with self._query(_wants_traits(params.features)) as query:
            first = query.numpy("SELECT min(timestamp) AS t FROM events", [])["t"]
            first_event = parse_ts(first[0]) if len(first) and not np.ma.is_masked(first[0]) else None
            cuts = propensity.cutoffs(now, params, first_event)
            if not cuts:
                raise NotEnoughData(
                    f"the stored events span less than horizon_days ({params.horizon_days}) days, so no past outcome"
                    " can be learnt from yet; wait for more history or shorten the horizon",
                    {"path": "/model/horizon_days"},
                )
            spec = resolve(params.features, query, now)
            parts_X, parts_y, parts_ids = [], [], []
            for at in cuts:
                snapshot = build(query, spec, at, population="seen")
                sql, args = label_sql(params.target_event, at, at + timedelta(days=params.horizon_days))
                positive = query.numpy(sql, args)["id"]
                parts_X.append(snapshot.X)
                parts_y.append(_member_of(snapshot.ids, positive).astype(np.int64))
                parts_ids.append(snapshot.ids)
            current = build(query, spec, now)
        X, y, ids = np.vstack(parts_X), np.concatenate(parts_y), np.concatenate(parts_ids)
        trained = propensity.train(X, y, ids, spec.features, params, select)
        reason = propensity.not_predictive(trained.metrics, params)
        if reason is not None:  # the previous model, scores and members stay; the history says why
            size = (
                self.store.reader()
                .execute("SELECT count(*) FROM memberships WHERE segment_key = ?", (key,))
                .fetchone()[0]
            )
            result = self.engine.record_run(
                segment, "not_predictive", trigger=trigger, started=started, started_at=started_at, size=size,
                note=reason,
            )  # fmt: skip
            return [result]
        keep = np.ones(len(current.ids), dtype=bool)
        if params.filter is not None:
            rule = _filter_rule(params.filter)
            with self.engine.session(memberships=rules.mentions(rule).segments) as con:
                allowed = self.engine.members_sql(con, rule, now)
            keep = _member_of(current.ids, np.asarray(list(allowed), dtype=object))
        scored_ids = current.ids[keep]
        scores = trained.score(current.X[keep])
        cutoff = select.cutoff(scores)
        members = set(scored_ids[scores >= cutoff].tolist())
        metrics = {
            **trained.metrics,
            "cutoffs": [format_ts(c) for c in cuts],
            "scored": len(scored_ids),
            "member_cutoff": round(cutoff, 6),
            "select": select.to_json(),
        }
        artifact = {"model": trained.model, "cutoff": cutoff}
        now_text = format_ts(utcnow())
        path = score_path(key)
        rounded = np.round(scores, 4).tolist()

        def before(conn: sqlite3.Connection) -> None:
            had = {
                r[0] for r in conn.execute("SELECT id FROM profiles WHERE scores LIKE ?", (f'%"{score_trait(key)}"%',))
            }
            gone = had - set(scored_ids.tolist())
            conn.executemany(
                f"UPDATE profiles SET scores = json_remove(scores, '{path}') WHERE id = ?", [(p,) for p in gone]
            )
            conn.executemany(
                f"UPDATE profiles SET scores = json_set(scores, '{path}', ?) WHERE id = ?",
                zip(rounded, scored_ids.tolist(), strict=True),
            )
            _save_model(conn, key, "propensity", spec, params.to_json(), metrics, artifact, now_text)

        results = self.engine.apply(
            [(segment, members)], trigger=trigger, started=started, started_at=started_at, before=before
        )
        return results

    def _previous_index(self, key: str, numbers: Mapping[int, int], ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """For each profile of ``ids``: the index (in this run's clusters, numbered ``numbers``) of the cluster it
        is a member of now, or -1."""
        index_of = {f"{key}.{number}": index for index, number in numbers.items()}
        where = {
            pid: index_of[child]
            for pid, child in self.store.reader().execute(
                "SELECT m.profile_id, m.segment_key FROM memberships m JOIN segments s ON s.key = m.segment_key"
                " WHERE s.parent_key = ?",
                (key,),
            )
            if child in index_of
        }
        return np.fromiter((where.get(pid, -1) for pid in ids.tolist()), dtype=np.int64, count=len(ids))

    def _children(self, key: str) -> list[dict[str, Any]]:
        return [
            orjson.loads(d)
            for (d,) in self.store.reader().execute(
                "SELECT definition FROM segments WHERE parent_key = ? ORDER BY key", (key,)
            )
        ]

    # -- real time ---------------------------------------------------------------------------------

    def realtime(self, profile_ids: list[str], trigger: str = "realtime") -> dict[str, set[str]]:
        """Assign these profiles to the nearest cluster of each trained cluster segment and rescore them for each
        propensity segment, with the stored models (no retraining). Returns segment key -> profiles re-checked,
        for the segments whose membership changed."""
        conn = self.store.reader()
        segments = conn.execute(
            "SELECT s.key, s.name, s.type, s.definition, m.id FROM segments s"
            " JOIN ml_models m ON m.id = (SELECT max(id) FROM ml_models WHERE owner = s.key)"
            " WHERE s.type IN ('cluster', 'propensity') AND s.parent_key IS NULL ORDER BY s.key"
        ).fetchall()
        if not segments or not profile_ids:
            return {}
        changed: dict[str, set[str]] = {}
        query = LocalQuery(conn, profile_ids)
        try:
            now = utcnow()
            for key, name, kind, definition, model_id in segments:
                model = self._load_model(model_id)
                spec = FeatureSpec.from_json(model["features"])
                matrix = build(query, spec, now)
                started, started_at = time.perf_counter(), format_ts(utcnow())
                scope = sorted(profile_ids)
                if kind == "cluster":
                    artifact = model["artifact"]
                    labels = artifact["fitted"].assign(matrix.X)
                    changes: list[tuple[dict[str, Any], set[str] | MemberList]] = []
                    for index, number in enumerate(artifact["numbers"]):
                        child_key = f"{key}.{number}"
                        row = conn.execute("SELECT name FROM segments WHERE key = ?", (child_key,)).fetchone()
                        if row is None:
                            continue
                        changes.append(({"key": child_key, "name": row[0]}, set(matrix.ids[labels == index].tolist())))
                    changes.insert(0, ({"key": key, "name": name}, set(matrix.ids.tolist())))
                    results = self.engine.apply(
                        changes, trigger=trigger, started=started, started_at=started_at, scope=scope
                    )
                else:
                    results = self._rescore(
                        key, name, definition, model, matrix, scope, now, trigger, started, started_at
                    )
                for r in results:
                    if r.entered or r.exited:
                        changed[r.segment_key] = set(scope)
        finally:
            query.close()
        return changed

    def _rescore(
        self,
        key: str,
        name: str,
        definition: str,
        model: dict[str, Any],
        matrix: Any,
        scope: list[str],
        now: datetime,
        trigger: str,
        started: float,
        started_at: str,
    ) -> list[RunResult]:
        from cdp.ml import propensity

        params = propensity.check_params(orjson.loads(definition).get("model") or {})
        ids, X = matrix.ids, matrix.X
        if params.filter is not None:
            allowed = self.engine.members_python(_filter_rule(params.filter), list(ids.tolist()), now)
            keep = np.fromiter((i in allowed for i in ids), dtype=bool, count=len(ids))
            ids, X = ids[keep], X[keep]
        artifact = model["artifact"]
        scores = propensity.Trained(artifact["model"], {}).score(X)
        members = set(ids[scores >= artifact["cutoff"]].tolist())
        path = score_path(key)
        rounded = np.round(scores, 4).tolist()
        out_of_filter = sorted(set(scope) - set(ids.tolist()))

        def before(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"UPDATE profiles SET scores = json_set(scores, '{path}', ?) WHERE id = ?",
                zip(rounded, ids.tolist(), strict=True),
            )
            conn.executemany(
                f"UPDATE profiles SET scores = json_remove(scores, '{path}') WHERE id = ?",
                [(p,) for p in out_of_filter],
            )

        return self.engine.apply(
            [({"key": key, "name": name}, members)],
            trigger=trigger,
            started=started,
            started_at=started_at,
            scope=scope,
            before=before,
        )

    # -- reads -------------------------------------------------------------------------------------

    def _latest(self, key: str) -> tuple[int, str, str, str, str, str] | None:
        row = (
            self.store.reader()
            .execute(
                "SELECT id, kind, created_at, features, params, metrics FROM ml_models WHERE owner = ?"
                " ORDER BY id DESC LIMIT 1",
                (key,),
            )
            .fetchone()
        )
        return (row[0], row[1], row[2], row[3], row[4], row[5]) if row else None

    def _trained(self, key: str, segment: Mapping[str, Any]) -> tuple[str, tuple[int, str, str, str, str, str]]:
        """The segment that owns the model (a cluster's parent) and its latest model row; 404 when untrained."""
        owner = str(segment["parent_key"] or key)
        latest = self._latest(owner)
        if latest is None:
            last = (
                self.store.reader()
                .execute(
                    "SELECT status, coalesce(note, error) FROM segment_runs WHERE segment_key = ? ORDER BY id DESC"
                    " LIMIT 1",
                    (owner,),
                )
                .fetchone()
            )
            if last is not None and last[0] != "succeeded":
                raise ModelNotTrained(
                    f"segment {owner!r} has no model in use: its last run was {last[0]}: {last[1]}",
                    {"key": owner, "last_run": {"status": last[0], "note": last[1]}},
                )
            raise ModelNotTrained(
                f"segment {owner!r} has no trained model yet; POST /v1/segments/{owner}/compute trains one",
                {"key": owner},
            )
        return owner, latest

    def _load_model(self, model_id: int) -> dict[str, Any]:
        """A stored model, unpickled once (models are immutable once written; ids are never reused)."""
        cached = self._models.get(model_id)
        if cached is None:
            cached = self._models[model_id] = self._read_model(model_id)
            while len(self._models) > 16:
                self._models.pop(next(iter(self._models)))
        return cached

    def _read_model(self, model_id: int) -> dict[str, Any]:
        row = (
            self.store.reader()
            .execute("SELECT features, params, metrics, artifact FROM ml_models WHERE id = ?", (model_id,))
            .fetchone()
        )
        return {
            "features": orjson.loads(row[0]),
            "params": orjson.loads(row[1]),
            "metrics": orjson.loads(row[2]),
            "artifact": pickle.loads(row[3]),
        }

    def model(self, key: str, segment: Mapping[str, Any]) -> dict[str, Any]:
        """The latest trained model of a segment: settings, features, quality metrics, top features/clusters."""
        if segment["type"] not in ML_TYPES:
            raise InvalidModel(f"segment {key!r} is a {segment['type']} segment; only ML segments have a model")
        owner, latest = self._trained(key, segment)
        model_id, kind, created, features, params, metrics = latest
        spec = FeatureSpec.from_json(orjson.loads(features))
        out: dict[str, Any] = {
            "segment": owner,
            "type": kind,
            "model_id": model_id,
            "trained_at": created,
            "params": orjson.loads(params),
            "features": [{"name": f.name, "description": f.describe()} for f in spec.features],
            "metrics": orjson.loads(metrics),
        }
        if kind == "propensity":
            out["score_trait"] = score_trait(owner)
        last = (
            self.store.reader()
            .execute(
                "SELECT status, finished_at, error, note FROM segment_runs WHERE segment_key = ? ORDER BY id DESC"
                " LIMIT 1",
                (owner,),
            )
            .fetchone()
        )
        out["last_run"] = (
            {"status": last[0], "finished_at": last[1], "error": last[2], "note": last[3]} if last else None
        )
        return out

    def plot(self, key: str, segment: Mapping[str, Any], fmt: str = "png", kind: str = "clusters") -> bytes:
        """A picture of the last run (PNG or SVG): ``clusters`` (profiles on the two features that set the
        clusters apart most, a bubble per cluster sized by its share) or ``profiles`` (each cluster's feature
        means in original units beside everyone's)."""
        check_format(fmt)
        return render(self.figure(key, segment, kind), fmt)

    def figure(self, key: str, segment: Mapping[str, Any], kind: str = "clusters") -> Any:
        """``plot``'s matplotlib figure (what was drawn can be read back from its artists)."""
        if segment["type"] != "cluster":
            raise InvalidModel(f"segment {key!r} is not a cluster segment; only those have a plot")
        if kind not in ("clusters", "profiles"):
            raise InvalidModel(f"a cluster picture is of clusters or profiles, not {kind!r}")
        owner, latest = self._trained(key, segment)
        model = self._load_model(latest[0])
        name = self.store.reader().execute("SELECT name FROM segments WHERE key = ?", (owner,)).fetchone()[0]
        features = FeatureSpec.from_json(model["features"]).features
        draw_one = profile_figure if kind == "profiles" else cluster_figure
        return draw_one(owner, str(name), model["artifact"], model["metrics"], features)


def original_units(X: np.ndarray[Any, Any], features: list[Any]) -> np.ndarray[Any, Any]:
    """The feature matrix in the units people read (log features back from log1p)."""
    out = np.array(X, dtype=np.float64, copy=True)
    for i, feature in enumerate(features):
        if feature.log:
            out[:, i] = np.expm1(out[:, i])
    return out


def _means(rows: np.ndarray[Any, Any], names: list[str]) -> dict[str, float]:
    if len(rows) == 0:
        return {name: 0.0 for name in names}
    return {name: round(float(v), 2) for name, v in zip(names, rows.mean(axis=0), strict=True)}


def _member_of(ids: np.ndarray[Any, Any], among: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """For each id, whether it is in ``among`` (hash-based: millions of string ids in about a second)."""
    import pandas as pd

    return np.asarray(pd.Index(among).get_indexer(ids) >= 0) if len(among) else np.zeros(len(ids), dtype=bool)


def _wants_traits(features: list[str]) -> bool:
    return any(f == "traits" or f.startswith("trait:") for f in features)


def _filter_rule(node: Mapping[str, Any]) -> rules.Rule:
    """A propensity model's ``filter`` (a rule node) as a Rule; errors point inside /model/filter."""
    try:
        parsed = rules.validate({"key": "filter", "name": "filter", "rule": dict(node)})
    except CDPError as exc:
        details = dict(exc.details)
        path = str(details.get("path", ""))
        details["path"] = "/model/filter" + path.removeprefix("/rule")
        raise InvalidModel(exc.message.replace("/rule", "/model/filter"), details) from exc
    assert parsed.rule is not None
    return parsed.rule


def _save_model(
    conn: sqlite3.Connection,
    owner: str,
    kind: str,
    spec: FeatureSpec,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifact: Mapping[str, Any],
    now: str,
) -> None:
    conn.execute(
        "INSERT INTO ml_models (owner, kind, created_at, features, params, metrics, artifact)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            owner,
            kind,
            now,
            orjson.dumps(spec.to_json()).decode(),
            orjson.dumps(dict(params)).decode(),
            orjson.dumps(dict(metrics)).decode(),
            pickle.dumps(dict(artifact), protocol=pickle.HIGHEST_PROTOCOL),
        ),
    )
    # Keep the last few trainings of each owner (their metrics are the model's history).
    conn.execute(
        "DELETE FROM ml_models WHERE owner = ? AND id NOT IN (SELECT id FROM ml_models WHERE owner = ?"
        " ORDER BY id DESC LIMIT 10)",
        (owner, owner),
    )


def forget(conn: sqlite3.Connection, key: str) -> None:
    """Remove an ML segment's models and scores (when the segment is deleted)."""
    conn.execute("DELETE FROM ml_models WHERE owner = ?", (key,))
    conn.execute(
        f"UPDATE profiles SET scores = json_remove(scores, '{score_path(key)}') WHERE scores LIKE ?",
        (f'%"{score_trait(key)}"%',),
    )
