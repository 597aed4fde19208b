"""Synthetic customers for the demo, identity-resolution tests and benchmarks.

`generate()` writes a deterministic dataset: two CRM exports that disagree the way real ones do (a
Salesforce-shaped and a HubSpot-shaped CSV), the Segment messages the same people sent from browsers,
the mobile app and the email service, and the ground truth (which person each CRM row and each event
really belongs to). Everything is drawn from seeded `random.Random` streams, one per chunk of 25,000
people with its own id ranges, so the same seed, `now` and size give the same bytes on any machine;
several chunks run in worker processes. Events are spilled to disk and sorted a few hours at a time,
so a million customers never sit in memory at once.

The people are built to be hard to resolve: nicknames, typos, formatting noise and missing fields between
a person's rows; within-source duplicates; moves and job changes; households (same surname, address and
sometimes landline, different people); shared devices; and very common names reused by strangers.
sample_data/README.md describes the files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdp.demo.generator import CHUNK_PEOPLE, Generator, run_job
from cdp.demo.pools import FIELDS, HEADERS, HUBSPOT_HEADER, NAMES, SALESFORCE_HEADER, WINDOW_DAYS
from cdp.demo.spool import Blocks, Job, Plan, plan_bytes, sort_buckets

__all__ = ["HUBSPOT_HEADER", "SALESFORCE_HEADER", "WINDOW_DAYS", "DemoSummary", "generate"]


@dataclass(frozen=True)
class DemoSummary:
    """What `generate` wrote: counts, and where each file is."""

    output: Path
    customers: int  # people generated
    records: int  # CRM rows written (both sources)
    events: int  # Segment messages written
    files: dict[str, Path]  # logical name -> path


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """Worker processes, forked: only where that is safe (POSIX, no other threads); else run in-process."""
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def _done(result: tuple[int, int, Blocks]) -> Future[tuple[int, int, Blocks]]:
    future: Future[tuple[int, int, Blocks]] = Future()
    future.set_result(result)
    return future


def _merge(work: Path, output: Path, blocks: list[Blocks], pool: Executor | None, tasks: int) -> None:
    """Concatenate the chunks' CRM and truth parts in order, and sort the event buckets into one file."""
    for name, header in zip(NAMES[:2] + NAMES[3:5], HEADERS, strict=True):
        with open(output / name, "wb") as out:
            out.write((",".join(header) + "\n").encode())
            for chunk in range(len(blocks)):
                part = work / f"c{chunk:05d}-{name}"
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                part.unlink()
    buckets: dict[int, list[tuple[Path, int, int, int]]] = {}
    for chunk, chunk_blocks in enumerate(blocks):
        path = work / f"c{chunk:05d}-events"
        for bucket, spilled in chunk_blocks.items():
            buckets.setdefault(bucket, []).extend((path, *block) for block in spilled)
    total, done = plan_bytes(list(buckets.items())), 0
    plans: list[Plan] = []
    for bucket, parts in sorted(buckets.items()):  # contiguous runs of buckets of about equal size
        if not plans or done >= total * len(plans) / tasks:
            plans.append([])
        plans[-1].append((bucket, parts))
        done += plan_bytes([(bucket, parts)])
    starts = [sum(plan_bytes(plan) for plan in plans[:i]) for i in range(len(plans))]
    events = output / NAMES[2]
    with open(events, "wb") as out:
        out.truncate(total)
    written = (pool.map if pool is not None else map)(sort_buckets, plans, [events] * len(plans), starts)
    if sum(written) != total:
        raise RuntimeError(f"merging the event buckets wrote {sum(written)} bytes, expected {total}")


def _generate(
    output: Path, customers: int, seed: int, now: datetime, progress: Callable[[int], None] | None,
    chunk_people: int = CHUNK_PEOPLE, workers: int | None = None,
) -> DemoSummary:  # fmt: skip
    now_ms = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)  # exact, unlike floats
    chunks = -(-customers // chunk_people)
    files = {name.split(".")[0]: output / name for name in NAMES}
    if chunks == 1:
        job = Job(output, customers, seed, now_ms, 0, 1, 0, customers)
        records, events, _ = Generator(job).run(progress)
    else:
        if workers is None:
            workers = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        workers = max(1, min(workers, chunks))
        with tempfile.TemporaryDirectory(prefix=".demo-", dir=output) as tmp:
            work = Path(tmp)
            bounds = [(c * chunk_people, min(customers, (c + 1) * chunk_people)) for c in range(chunks)]
            jobs = [Job(work, customers, seed, now_ms, c, chunks, *bound) for c, bound in enumerate(bounds)]
            pool = _pool(workers)
            try:
                if pool is None:
                    futures = [_done(run_job(job)) for job in jobs]
                else:
                    futures = [pool.submit(run_job, job) for job in jobs]
                held = 0  # the last chunk is reported once the merge is done too
                for count, future in enumerate(as_completed(futures), 1):
                    job = jobs[futures.index(future)]
                    if progress is not None and count < chunks:
                        progress(job.hi - job.lo)
                    held = job.hi - job.lo
                results = [future.result() for future in futures]
                _merge(work, output, [blocks for *_, blocks in results], pool, 4 * workers)
            finally:
                if pool is not None:
                    pool.shutdown()
        if progress is not None:
            progress(held)
        records, events = sum(r[0] for r in results), sum(r[1] for r in results)
    manifest = {
        "generated_at": f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%S}.{now_ms % 1000:03d}Z", "seed": seed,
        "customers": customers, "records": records, "events": events,
        "files": [
            {"path": NAMES[0], "kind": "records", "format": "csv", "source": "salesforce",
             "id_column": "Id", "map": dict(zip(SALESFORCE_HEADER[1:12], FIELDS, strict=True))},
            {"path": NAMES[1], "kind": "records", "format": "csv", "source": "hubspot",
             "id_column": "Record ID", "map": dict(zip(HUBSPOT_HEADER[1:12], FIELDS, strict=True))},
            {"path": NAMES[2], "kind": "events", "format": "ndjson"},
        ],
        "truth": {"records": NAMES[3], "events": NAMES[4]},
    }  # fmt: skip
    files["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return DemoSummary(output, customers, records, events, files)


def generate(
    output: Path,
    customers: int = 200,
    seed: int = 42,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoSummary:
    """Write a synthetic dataset of `customers` people into `output` (created if missing).

    `now` (default: the current UTC time) ends the 120-day event window; a naive datetime is read as UTC.
    `progress(n)` is called with the number of customers completed since the previous call. The same
    seed, `now` and `customers` give byte-identical files (whatever the number of CPUs).
    """
    if isinstance(customers, bool) or not isinstance(customers, int) or customers < 1:
        raise ValueError(f"customers must be a whole number of at least 1, got {customers!r}")
    now = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    return _generate(output, customers, seed, now.astimezone(UTC), progress)
