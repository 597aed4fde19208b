"""Privacy: time to erase one person from a large store, and ingest throughput under a long suppression list.

    .venv/bin/python bench/privacy.py                  # the 1,000,000-profile / 10,000,000-event store
    .venv/bin/python bench/privacy.py --quick          # 100,000 profiles, 1,000,000 events (smoke run)
    .venv/bin/python bench/privacy.py --skip-delete    # only the suppression part

What it does, in order:

1. **Store** (setup, not measured): the store of ``bench/segments.py`` (same generator, same cache under
   ``--cache-dir``; built when missing), copied to a work file and opened with ``CDP`` (migrations applied).
2. **Erasure**: picks ``--people`` live profiles with about ``--events-per-person`` events (80-120 % of it,
   seeded) and erases each with ``cdp.privacy.submit("delete", profile_id=..., background=False)`` (what
   ``cdp privacy delete`` runs): find, event chunks, every other table, the ``profile.deleted`` outbox row,
   then the WAL checkpointed and truncated. Wall time per person; checks each one's events and profile are
   gone and nobody else's events were touched (the events count falls by exactly what was reported).
3. **Suppression at the door**: ``--rounds`` pairs of rounds, each round a fresh store ingesting the pair's
   ``--batches`` batches of 500 messages (identify / track / page, new and returning users) through
   ``cdp.ingest.batch`` (validation, identity graph, SQLite insert, one commit a batch): once with an empty
   suppression list, once with ``--suppressed`` entries (none matching, so the same rows are stored), in
   alternating order. Reports events/s, the ratio per pair (median), and the CPU time of the suppression
   check alone per event (robust to a loaded machine).
4. Prints a report and, last, one JSON line with every number.

Goal: <= 2 s to delete a person with 100 events from the 1M / 10M store; ingest with 10,000 suppressed
identifiers within noise of ingest without. Measurements, not assertions: exit 0 unless a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cdp import CDP, Settings  # noqa: E402
from cdp.privacy import suppression  # noqa: E402
from cdp.privacy.hashing import identifier_hash, salt  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pick_people(db: Path, n: int, target: int, seed: int) -> list[tuple[str, int]]:
    """``n`` live profiles with target*0.8..1.2 events, from a seeded random walk over the profile index."""
    conn = sqlite3.connect(db)
    try:
        low, high = int(target * 0.8), int(target * 1.2)
        rows = conn.execute(
            "SELECT profile_id, count(*) AS c FROM events WHERE profile_id IS NOT NULL GROUP BY profile_id"
            " HAVING c BETWEEN ? AND ?",
            (low, high),
        ).fetchall()
        live = {r[0] for r in conn.execute("SELECT id FROM profiles WHERE merged_into IS NULL")}
    finally:
        conn.close()
    rows = [r for r in rows if r[0] in live]
    random.Random(seed).shuffle(rows)
    return [(str(p), int(c)) for p, c in rows[:n]]


def bench_delete(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import segments as seg_bench  # bench/segments.py: the store generator and its cache

    n_live = 100_000 if args.quick else args.profiles
    n_events = 1_000_000 if args.quick else args.events
    meta = seg_bench.cached_store(args.cache_dir, n_live, n_events, False, log)
    db = work / "store.db"
    started = time.perf_counter()
    shutil.copy(meta["path"], db)
    log(f"store: copied in {time.perf_counter() - started:.1f} s ({db.stat().st_size / 1e9:.2f} GB)")
    people = pick_people(db, args.people, args.events_per_person, args.seed)
    if not people:
        raise SystemExit(f"no profile has about {args.events_per_person} events in this store")
    log(f"erasure: {len(people)} people with {min(c for _, c in people)}-{max(c for _, c in people)} events")
    times: list[float] = []
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        total = cdp.store.reader().execute("SELECT count(*) FROM events").fetchone()[0]
        for pid, events in people:
            t0 = time.perf_counter()
            result = cdp.privacy.submit("delete", profile_id=pid, background=False)
            elapsed = time.perf_counter() - t0
            times.append(elapsed)
            left = cdp.store.reader().execute("SELECT count(*) FROM events").fetchone()[0]
            ok = (
                result["status"] == "done"
                and result["counts"].get("events") == events
                and left == total - events
                and not cdp.store.reader().execute("SELECT 1 FROM profiles WHERE id = ?", (pid,)).fetchone()
            )
            if not ok:
                raise SystemExit(f"erasure of {pid} is wrong: {result}")
            total = left
            log(f"  {pid}: {events} events, {sum(result['counts'].values())} rows, {elapsed * 1000:.0f} ms")
    return {
        "store_profiles": n_live,
        "store_events": n_events,
        "people": len(people),
        "events_per_person": [c for _, c in people],
        "delete_seconds_median": round(statistics.median(times), 3),
        "delete_seconds_max": round(max(times), 3),
        "delete_seconds_all": [round(t, 3) for t in times],
    }


def _messages(rng: random.Random, n: int, round_no: int, batch_no: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        user = f"user-{rng.randrange(50_000)}"
        anon = f"anon-{round_no}-{batch_no}-{i}"
        kind = rng.random()
        if kind < 0.1:
            out.append({"type": "identify", "userId": user, "anonymousId": anon,
                        "traits": {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"])}})  # fmt: skip
        elif kind < 0.7:
            event = rng.choice(["Viewed", "Added", "Order Completed"])
            properties = {"revenue": rng.randrange(100), "sku": f"sku-{rng.randrange(1000)}"}
            out.append({"type": "track", "userId": user, "event": event, "properties": properties})
        else:
            out.append({"type": "page", "anonymousId": anon, "name": "Home", "properties": {"path": "/"}})
    return out


def _round(db: Path, batches: list[list[dict[str, Any]]], suppressed: int) -> tuple[float, float, int]:
    """Ingest ``batches`` into a fresh store whose suppression list has ``suppressed`` entries (none matching):
    events/s, the CPU microseconds per event of the suppression check alone, and the events stored."""
    from cdp.ingest import storage

    with CDP(Settings(db=db, scheduler_enabled=False, ingest_writer="thread")) as cdp:
        key = cdp.keys.create("write", "bench")[1]

        def fill(conn: sqlite3.Connection) -> None:
            k = salt(conn)
            conn.executemany(
                "INSERT INTO privacy_suppressions (hash, type, request_id, created_at) VALUES (?, ?, 'bench', '')",
                [(identifier_hash(k, "email", f"suppressed-{i}@example.org"), "email") for i in range(suppressed)],
            )
            suppression.bump(conn)

        cdp.store.write(fill)
        spent = [0.0]
        original = storage.drop_suppressed_events

        def timed(*args: Any) -> list[int]:
            t = time.process_time()
            try:
                return original(*args)
            finally:
                spent[0] += time.process_time() - t

        storage.drop_suppressed_events = timed  # type: ignore[assignment]
        try:
            t0 = time.perf_counter()
            for batch in batches:
                cdp.ingest.batch({"batch": batch}, write_key=key)
            elapsed = time.perf_counter() - t0
        finally:
            storage.drop_suppressed_events = original
        stored = cdp.store.reader().execute("SELECT count(*) FROM events").fetchone()[0]
    n = sum(len(b) for b in batches)
    return n / elapsed, spent[0] * 1e6 / n, int(stored)


def bench_suppression(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Pairs of rounds on fresh stores with the same messages, in alternating order (AB, BA, ...)."""
    rates: dict[str, list[float]] = {"empty": [], "suppressed": []}
    check_us: dict[str, list[float]] = {"empty": [], "suppressed": []}
    ratios: list[float] = []
    rng = random.Random(args.seed)
    for pair in range(args.rounds):
        batches = [_messages(rng, 500, pair, b) for b in range(args.batches)]
        order = ["empty", "suppressed"] if pair % 2 == 0 else ["suppressed", "empty"]
        got: dict[str, float] = {}
        for mode in order:
            db = work / f"ingest-{pair}-{mode}.db"
            rate, us, stored = _round(db, batches, 0 if mode == "empty" else args.suppressed)
            if stored != 500 * args.batches:
                raise SystemExit(f"ingest stored {stored} events, expected {500 * args.batches}")
            rates[mode].append(rate)
            check_us[mode].append(us)
            got[mode] = rate
            log(f"  pair {pair} ({mode}): {rate:,.0f} events/s, suppression check {us:.2f} us/event")
            for path in work.glob(f"ingest-{pair}-{mode}.db*"):
                path.unlink()
        ratios.append(got["suppressed"] / got["empty"])
    return {
        "suppressed_entries": args.suppressed,
        "ingest_events_per_s_empty_list": round(statistics.median(rates["empty"])),
        "ingest_events_per_s_suppression_list": round(statistics.median(rates["suppressed"])),
        "ingest_ratio_with_list_median": round(statistics.median(ratios), 3),
        "ingest_ratio_with_list_all": [round(r, 3) for r in ratios],
        "suppression_check_us_per_event_empty_list": round(statistics.median(check_us["empty"]), 2),
        "suppression_check_us_per_event_suppression_list": round(statistics.median(check_us["suppressed"]), 2),
        "pairs": args.rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/cdp-bench-segments"))
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--events-per-person", type=int, default=100)
    parser.add_argument("--suppressed", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=40, help="batches of 500 messages per ingest round")
    parser.add_argument("--rounds", type=int, default=4, help="pairs of rounds (with and without the list)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-delete", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="cdp-bench-privacy-") as tmp:
        work = Path(tmp)
        if not args.skip_delete:
            report.update(bench_delete(args, work))
            (work / "store.db").unlink(missing_ok=True)
        report.update(bench_suppression(args, work))
    print("privacy bench")
    for key, value in report.items():
        print(f"  {key}: {value}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
