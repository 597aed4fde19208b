"""Machine-learned segments at scale: cluster and score 1M profiles, against bare DuckDB + scikit-learn in one run.

    .venv/bin/python bench/ml.py                      # 1,000,000 profiles (about 5.5M events)
    .venv/bin/python bench/ml.py --profiles 100000    # a quicker run
    .venv/bin/python bench/ml.py --json-only          # one JSON line

1. **Store** (setup, cached under ``--cache-dir``): a real cdp SQLite file (our migrations) with ``--profiles``
   live profiles in four planted behavioural groups (whales: many large recent orders; browsers: many
   product views this week; dormant: one visit months ago; bargain hunters: a small order two months ago)
   and a planted purchase signal ("Added to Wishlist" is followed by "Order Completed" within 7 days with
   probability 0.7), generated in DuckDB and written through DuckDB's SQLite writer in a child process.
2. **cdp**, in a fresh child process on a copy of the store: creates a cluster segment (k-means, ``k=auto``,
   RFM + engagement features) and a propensity segment (logistic, 7 days, top quarter) and computes each
   twice: the first run writes every membership, enter row and outbox row; the second is the steady state.
   Times are wall-clock seconds of ``compute`` (features, training, scoring, the membership diff and the
   SQLite transaction). Peak memory is the largest resident set of the child and its DuckDB worker together,
   sampled every 0.2 s.
3. **Bare DuckDB + scikit-learn**, what one would write by hand for these two models without cdp, in
   another child on the same SQLite file: DuckDB's scanner copies the events in, hand-written feature SQL
   (the ten RFM and engagement features, plus wishlist counts for the propensity model), StandardScaler +
   KMeans with cdp's chosen k; four weekly snapshots labelled by the next week's orders, LogisticRegression
   and ``predict_proba`` for every profile. It writes nothing back. The ratio cdp / bare says what cdp adds:
   choosing k, quality and stability scores, names, the larger feature set (12 event names x 3 windows),
   the holdout and label-shuffle control, and writing memberships, history, outbox rows and scores in one
   transaction.
4. Quality against the planted truth: adjusted Rand of the clusters, holdout AUC of the scores.

Targets (2 cores): clustering and scoring 1M profiles within 2 minutes each, peak memory within 4 GB.
Exit status 1 only when something fails.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_S = 120.0
NOW_VAR = "getvariable('now_ts')"
TARGET_GB = 4.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the store ---------------------------------------------------------------------------------------------


def _migrate(path: str) -> None:
    from cdp import CDP, Settings

    CDP(Settings(db=path, scheduler_enabled=False)).close()


def _checkpoint(path: str) -> None:
    import sqlite3

    sq = sqlite3.connect(path)
    sq.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert sq.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    sq.close()


def _build(path: str, n: int, now_iso: str) -> dict[str, Any]:
    """Runs in a child process of its own (two copies of SQLite in one process break each other's locks: see
    cdp.segments.engine): rows through DuckDB's SQLite writer."""
    import duckdb
    from duckdb_extensions import import_extension

    import_extension("sqlite_scanner")
    con = duckdb.connect()
    con.execute("LOAD sqlite_scanner")
    con.execute("SELECT setseed(0.42)")
    con.execute(f"ATTACH '{path}' AS db (TYPE sqlite)")
    now = datetime.fromisoformat(now_iso)
    con.execute("SET VARIABLE now_ts = ?::TIMESTAMP", [now.replace(tzinfo=None)])
    started = time.perf_counter()
    con.execute(
        """
        CREATE TEMP TABLE p AS
        SELECT i, printf('prof_%08d', i) AS id,
               CASE WHEN r < 0.10 THEN 'whale' WHEN r < 0.45 THEN 'browser' WHEN r < 0.80 THEN 'dormant'
                    ELSE 'bargain' END AS grp,
               random() < 0.2 AS wisher
        FROM (SELECT range AS i, random() AS r FROM range(?))
        """,
        [n],
    )
    # One row per event: (profile, event name, timestamp, revenue).
    con.execute(
        """
        CREATE TEMP TABLE ev AS
        WITH base AS (
          SELECT id, grp, unnest(range(CASE grp WHEN 'whale' THEN 10 + CAST(floor(random() * 5) AS INT)
                                               WHEN 'browser' THEN 6 + CAST(floor(random() * 5) AS INT)
                                               WHEN 'dormant' THEN 1 ELSE 3 END)) AS j, random() AS a, random() AS b
          FROM p),
        behaviour AS (
          SELECT id,
                 CASE WHEN grp = 'whale' AND a < 0.4 THEN 'Order Completed'
                      WHEN grp = 'bargain' AND j = 0 THEN 'Order Completed' ELSE 'Product Viewed' END AS event,
                 getvariable('now_ts') - CASE grp
                      WHEN 'whale' THEN INTERVAL 1 SECOND * CAST(b * 30 * 86400 AS BIGINT)
                      WHEN 'browser' THEN INTERVAL 1 SECOND * CAST(b * 7 * 86400 AS BIGINT)
                      WHEN 'dormant' THEN INTERVAL 1 SECOND * CAST((150 + b * 150) * 86400 AS BIGINT)
                      ELSE INTERVAL 1 SECOND * CAST((40 + (hash(id) % 20) + b) * 86400 AS BIGINT) END AS ts,
                 CASE WHEN grp = 'whale' THEN 200 + b * 300 WHEN grp = 'bargain' THEN 10 + b * 20 END AS revenue
          FROM base),
        wishes AS (
          SELECT id, getvariable('now_ts') - INTERVAL 1 SECOND * CAST(random() * 60 * 86400 AS BIGINT) AS t,
                 random() AS c
          FROM p WHERE wisher),
        signal AS (
          SELECT id, 'Added to Wishlist' AS event, t AS ts, NULL::DOUBLE AS revenue FROM wishes
          UNION ALL SELECT id, 'Added to Wishlist', t + INTERVAL 2 HOUR, NULL FROM wishes
          UNION ALL SELECT id, 'Order Completed', t + INTERVAL 1 SECOND * CAST(c * 7 * 86400 / 0.7 AS BIGINT),
                           20 + c * 100
                    FROM wishes WHERE c < 0.7
                      AND t + INTERVAL 1 SECOND * CAST(c * 7 * 86400 / 0.7 AS BIGINT) < getvariable('now_ts')),
        noise AS (
          SELECT id, 'Order Completed' AS event,
                 getvariable('now_ts') - INTERVAL 1 SECOND * CAST(random() * 60 * 86400 AS BIGINT) AS ts,
                 20 + random() * 100 AS revenue
          FROM p WHERE random() < 0.05)
        SELECT * FROM behaviour UNION ALL SELECT * FROM signal UNION ALL SELECT * FROM noise
        """
    )
    events = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    stamp = "strftime({}, '%Y-%m-%dT%H:%M:%S.%gZ')"
    con.execute(
        "INSERT INTO db.profiles (id, created_at, updated_at, traits, computed, refreshed_at)"
        f" SELECT id, {stamp.format(NOW_VAR)}, {stamp.format(NOW_VAR)},"
        " json_object('bench_group', grp), '{}', NULL FROM p ORDER BY id"
    )
    con.execute(
        "INSERT INTO db.events (message_id, type, event, user_id, profile_id, timestamp, received_at, properties,"
        " source)"
        f" SELECT 'm' || row_number() OVER (), 'track', event, id, id, {stamp.format('ts')}, {stamp.format('ts')},"
        " CASE WHEN revenue IS NULL THEN '{}' ELSE json_object('revenue', round(revenue, 2)) END, 'bench'"
        " FROM ev ORDER BY ts"
    )
    con.close()
    return {"profiles": n, "events": int(events), "build_s": round(time.perf_counter() - started, 1)}


def cached_store(cache: Path, n: int, rebuild: bool) -> tuple[Path, dict[str, Any]]:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"store-{n}.db"
    meta_path = cache / f"store-{n}.json"
    if path.exists() and meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        say(f"using the cached store {path} ({meta['profiles']:,} profiles, {meta['events']:,} events)")
        return path, meta
    for stale in cache.glob(f"store-{n}.db*"):
        stale.unlink()
    now = datetime.now(UTC).replace(microsecond=0)
    say(f"building a store of {n:,} profiles under {cache} (cached for later runs) ...")
    run_child(_migrate, str(path))
    meta = run_child(_build, str(path), n, now.isoformat())
    run_child(_checkpoint, str(path))
    meta["now"] = now.isoformat()
    meta_path.write_text(json.dumps(meta))
    say(f"built: {meta['events']:,} events in {meta['build_s']} s")
    return path, meta


# -- running in a child, with its memory sampled -----------------------------------------------------------


def _tree_rss_kb(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def _child_main(queue: Any, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        queue.put(("ok", fn(*args)))
    except BaseException as exc:  # report, then fail the run
        import traceback

        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_child(fn: Any, *args: Any, sample: dict[str, float] | None = None) -> Any:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(queue, fn, args))
    child.start()
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            if sample is not None and child.pid:
                sample["peak_kb"] = max(sample.get("peak_kb", 0), _tree_rss_kb(child.pid))
            stop.wait(0.2)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    try:
        status, value = queue.get()
    finally:
        stop.set()
        child.join()
    if status != "ok":
        raise RuntimeError(value)
    return value


# -- cdp ---------------------------------------------------------------------------------------------------

CLUSTER = {
    "key": "behaviour",
    "name": "Behavioural personas",
    "type": "cluster",
    "model": {"algorithm": "kmeans", "k": "auto", "features": ["rfm", "engagement"], "min_cluster_share": 0.02},
}
PROPENSITY = {
    "key": "likely_buyers",
    "name": "Likely to buy within 7 days",
    "type": "propensity",
    "model": {"target_event": "Order Completed", "horizon_days": 7, "features": ["rfm", "engagement", "events"]},
    "select": {"top_quantile": 0.25},
}


def _cdp_side(path: str) -> dict[str, Any]:
    """Runs in a child: cdp computes both segments twice."""
    import orjson
    from sklearn.metrics import adjusted_rand_score

    from cdp import CDP, Settings

    out: dict[str, Any] = {}
    cdp = CDP(Settings(db=path, scheduler_enabled=False))
    try:
        for definition in (CLUSTER, PROPENSITY):
            key = definition["key"]
            cdp.segments.create(definition)
            runs = []
            for attempt in (1, 2):
                started = time.perf_counter()
                result = cdp.segments.compute(key)
                seconds = time.perf_counter() - started
                if result.status != "succeeded":
                    raise RuntimeError(f"{key} run {attempt} failed: {result.error}")
                runs.append({"seconds": round(seconds, 2), "size": result.size, "entered": result.entered,
                             "exited": result.exited})  # fmt: skip
            model = cdp.segments.model(key)
            out[key] = {"runs": runs, "metrics": model["metrics"], "features": [f["name"] for f in model["features"]]}
        # Quality against the planted groups.
        truth = {
            pid: orjson.loads(traits)["bench_group"]
            for pid, traits in cdp.store.reader().execute("SELECT id, traits FROM profiles")
        }
        found = dict(
            cdp.store.reader().execute(
                "SELECT m.profile_id, m.segment_key FROM memberships m JOIN segments s ON s.key = m.segment_key"
                " WHERE s.parent_key = 'behaviour'"
            )
        )
        ids = sorted(truth)
        out["behaviour"]["adjusted_rand_vs_planted"] = round(
            float(adjusted_rand_score([truth[i] for i in ids], [found.get(i, "") for i in ids])), 4
        )
        out["behaviour"]["clusters"] = [
            {"key": c["key"], "name": c["name"], "size": c["size"]} for c in cdp.segments.list(parent="behaviour").data
        ]
    finally:
        cdp.close()
    return out


# -- bare DuckDB + scikit-learn ------------------------------------------------------------------------------

BARE_FEATURES = """
WITH ev AS (SELECT profile_id, event, timestamp AS ts, epoch_ms(CAST(left(timestamp, 23) AS TIMESTAMP)) AS ms,
                   CASE WHEN event = 'Order Completed'
                        THEN TRY_CAST(json_extract_string(properties, '/revenue') AS DOUBLE) END AS revenue
            FROM events WHERE timestamp < $at),
a AS (SELECT profile_id,
             max(ms) FILTER (WHERE event = 'Order Completed') AS last_order,
             count(*) FILTER (WHERE event = 'Order Completed') AS orders,
             coalesce(sum(revenue), 0) AS revenue,
             count(*) FILTER (WHERE ts >= $d7) AS e7, count(*) FILTER (WHERE ts >= $d30) AS e30,
             count(*) FILTER (WHERE ts >= $d90) AS e90,
             count(DISTINCT left(ts, 10)) FILTER (WHERE ts >= $d30) AS days30,
             count(*) FILTER (WHERE event = 'Added to Wishlist' AND ts >= $d7) AS w7,
             count(*) FILTER (WHERE event = 'Added to Wishlist' AND ts >= $d28) AS w28,
             max(ms) AS last_seen
      FROM ev GROUP BY profile_id),
g AS (SELECT profile_id, ms, CASE WHEN ms - lag(ms) OVER w > 1800000 OR lag(ms) OVER w IS NULL THEN 1 ELSE 0 END s
      FROM ev WHERE ts >= $d30 WINDOW w AS (PARTITION BY profile_id ORDER BY ms)),
n AS (SELECT profile_id, ms, sum(s) OVER (PARTITION BY profile_id ORDER BY ms ROWS UNBOUNDED PRECEDING) AS sid FROM g),
sp AS (SELECT profile_id, sid, (max(ms) - min(ms)) / 60000.0 AS minutes FROM n GROUP BY ALL),
se AS (SELECT profile_id, count(*) AS sessions, avg(minutes) AS minutes FROM sp GROUP BY profile_id)
SELECT p.id,
       coalesce(least(($at_ms - a.last_order) / 86400000.0, 365), 365) AS recency,
       ln(1 + coalesce(a.orders, 0)) AS frequency, ln(1 + greatest(coalesce(a.revenue, 0), 0)) AS monetary,
       ln(1 + coalesce(a.e7, 0)) AS e7, ln(1 + coalesce(a.e30, 0)) AS e30, ln(1 + coalesce(a.e90, 0)) AS e90,
       coalesce(a.days30, 0) AS days30, ln(1 + coalesce(se.sessions, 0)) AS sessions,
       ln(1 + coalesce(se.minutes, 0)) AS minutes,
       coalesce(least(($at_ms - a.last_seen) / 86400000.0, 365), 365) AS seen,
       ln(1 + coalesce(a.w7, 0)) AS w7, ln(1 + coalesce(a.w28, 0)) AS w28
FROM profiles p LEFT JOIN a ON a.profile_id = p.id LEFT JOIN se ON se.profile_id = p.id
WHERE $everyone OR a.profile_id IS NOT NULL
ORDER BY p.id
"""
CLUSTER_COLUMNS = ["recency", "frequency", "monetary", "e7", "e30", "e90", "days30", "sessions", "minutes", "seen"]


def _bare_side(path: str, k: int, now_iso: str, horizon_days: int = 7, snapshots: int = 4) -> dict[str, Any]:
    """What a data scientist would write without cdp, for the same two models: DuckDB over the same SQLite file
    (hand-written feature SQL for this data), then scikit-learn. Nothing is written back."""
    from datetime import timedelta

    import duckdb
    import numpy as np
    from duckdb_extensions import import_extension
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    import_extension("sqlite_scanner")
    now = datetime.fromisoformat(now_iso)

    def features(con: Any, at: datetime, everyone: bool) -> tuple[Any, Any]:
        def stamp(d: datetime) -> str:
            return d.strftime("%Y-%m-%dT%H:%M:%S.000Z")

        found = con.execute(
            BARE_FEATURES,
            {"at": stamp(at), "at_ms": int(at.timestamp() * 1000), "everyone": everyone,
             **{f"d{n}": stamp(at - timedelta(days=n)) for n in (7, 28, 30, 90)}},
        ).fetchnumpy()  # fmt: skip
        return found["id"], np.column_stack([np.asarray(found[c], dtype=np.float64) for c in found if c != "id"])

    out: dict[str, Any] = {}
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("LOAD sqlite_scanner")
    con.execute(f"ATTACH '{path}' AS db (TYPE sqlite, READ_ONLY)")
    con.execute("CREATE TEMP TABLE events AS SELECT profile_id, event, timestamp, properties FROM db.events")
    con.execute("CREATE TEMP TABLE profiles AS SELECT id FROM db.profiles WHERE merged_into IS NULL")
    out["load_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    _, X = features(con, now, True)
    Z = StandardScaler().fit_transform(X[:, : len(CLUSTER_COLUMNS)])
    KMeans(n_clusters=k, n_init=3, random_state=0).fit(Z).predict(Z)
    out["cluster_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    parts, labels = [], []
    for i in range(snapshots):
        at = now - timedelta(days=horizon_days * (i + 1))
        ids, Xs = features(con, at, False)
        bought = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT profile_id FROM events WHERE event = 'Order Completed' AND timestamp >= ?"
                " AND timestamp < ?",
                [
                    at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    (at + timedelta(days=horizon_days)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                ],
            ).fetchall()
        }
        parts.append(Xs)
        labels.append(np.fromiter((i in bought for i in ids), dtype=bool, count=len(ids)))
    X_train, y = np.vstack(parts), np.concatenate(labels)
    model = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))])
    rows = np.random.default_rng(0).choice(len(X_train), size=min(300_000, len(X_train)), replace=False)
    model.fit(X_train[rows], y[rows])
    _, X_now = features(con, now, True)
    model.predict_proba(X_now)
    out["propensity_s"] = round(time.perf_counter() - started, 2)
    con.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/cdp-bench-ml"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    store, meta = cached_store(args.cache_dir, args.profiles, args.rebuild)
    work = Path(tempfile.mkdtemp(prefix="cdp-bench-ml-"))
    try:
        db = work / "cdp.db"
        shutil.copy(store, db)
        load_before = os.getloadavg()
        say("cdp: cluster segment (k=auto) and propensity segment, two runs each ...")
        memory: dict[str, float] = {}
        cdp = run_child(_cdp_side, str(db), sample=memory)
        say("bare DuckDB + scikit-learn, hand-written for the same models ...")
        bare_memory: dict[str, float] = {}
        k = int(cdp["behaviour"]["metrics"]["k"])
        bare = run_child(_bare_side, str(store), k, meta["now"], sample=bare_memory)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cluster_s = cdp["behaviour"]["runs"][0]["seconds"]
    score_s = cdp["likely_buyers"]["runs"][0]["seconds"]
    peak_gb = memory.get("peak_kb", 0) / 1024 / 1024
    report = {
        "profiles": meta["profiles"],
        "events": meta["events"],
        "cluster": {
            "first_run_s": cluster_s,
            "second_run_s": cdp["behaviour"]["runs"][1]["seconds"],
            "bare_s": bare["cluster_s"] + bare["load_s"],
            "ratio_vs_bare": round(cluster_s / (bare["cluster_s"] + bare["load_s"]), 2),
            "k": k,
            "silhouette": cdp["behaviour"]["metrics"]["silhouette"],
            "davies_bouldin": cdp["behaviour"]["metrics"]["davies_bouldin"],
            "stability_ari": cdp["behaviour"]["metrics"]["stability_ari"],
            "adjusted_rand_vs_planted": cdp["behaviour"]["adjusted_rand_vs_planted"],
            "clusters": cdp["behaviour"]["clusters"],
        },
        "propensity": {
            "first_run_s": score_s,
            "second_run_s": cdp["likely_buyers"]["runs"][1]["seconds"],
            "bare_s": bare["propensity_s"] + bare["load_s"],
            "ratio_vs_bare": round(score_s / (bare["propensity_s"] + bare["load_s"]), 2),
            "auc": cdp["likely_buyers"]["metrics"]["auc"],
            "shuffled_label_auc": cdp["likely_buyers"]["metrics"]["shuffled_label_auc"],
            "permutation_test": cdp["likely_buyers"]["metrics"]["permutation_test"],
            "training_rows": cdp["likely_buyers"]["metrics"]["training_rows"],
            "members": cdp["likely_buyers"]["runs"][0]["size"],
        },
        "peak_rss_gb": round(peak_gb, 2),
        "bare_peak_rss_gb": round(bare_memory.get("peak_kb", 0) / 1024 / 1024, 2),
        "targets": {"seconds": TARGET_S, "gb": TARGET_GB},
        "met": cluster_s <= TARGET_S and score_s <= TARGET_S and peak_gb <= TARGET_GB,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    if not args.json_only:
        c, p = report["cluster"], report["propensity"]
        print(f"{report['profiles']:,} profiles, {report['events']:,} events")
        print(f"cluster (k={c['k']}): cdp {c['first_run_s']} s first run, {c['second_run_s']} s second;"
              f" bare DuckDB + scikit-learn {c['bare_s']} s; ratio {c['ratio_vs_bare']}x")  # fmt: skip
        print(f"  silhouette {c['silhouette']}, Davies-Bouldin {c['davies_bouldin']}, stability {c['stability_ari']},"
              f" adjusted Rand vs planted groups {c['adjusted_rand_vs_planted']}")  # fmt: skip
        for cluster in c["clusters"]:
            print(f"  {cluster['key']:<14} {cluster['size']:>9,}  {cluster['name']}")
        print(f"propensity: cdp {p['first_run_s']} s first run, {p['second_run_s']} s second;"
              f" bare DuckDB + scikit-learn {p['bare_s']} s; ratio {p['ratio_vs_bare']}x")  # fmt: skip
        print(f"  holdout AUC {p['auc']} (shuffled labels {p['shuffled_label_auc']}), {p['members']:,} members")
        verdict = "met" if report["met"] else "MISSED"
        print(f"peak memory (cdp + DuckDB worker) {report['peak_rss_gb']} GB; targets <= {TARGET_S:.0f} s and"
              f" <= {TARGET_GB:.0f} GB: {verdict}; load {report['load_avg_before']}")  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
