"""Ingestion throughput: the real HTTP Tracking API against raw SQLite, in one run.

    .venv/bin/python bench/ingest.py [--events 200000] [--batch 100] [--clients 4] [--json-only]

What it does, in order:

1. In a temporary directory, creates a store and a write key, then starts the real server as a
   subprocess (``cdp serve --no-scheduler``) on a free port of 127.0.0.1 and waits for ``/healthz``.
2. Generates ``--events`` realistic Segment messages (track with product / order properties,
   identify with traits, page with ``context.page``) and serialises them into ``/v1/batch`` bodies of
   ``--batch`` messages, all before the clock starts.
3. Sends them from ``--clients`` processes, each over one keep-alive ``http.client`` connection with
   a precomputed HTTP Basic header; only ``sentAt`` is stamped into a body as it goes out, like an SDK
   does. Every response must be ``200 {"success":true}``. Throughput is events / (last response -
   first send); latency is per request.
4. Checks that the store holds exactly that many events, and that a sample of them equals, column
   by column, the rows the baseline inserts (so the comparison is like for like).
5. Baseline, with the server stopped: the same rows into a fresh file with the same schema and
   pragmas, ``executemany`` of the store's ``INSERT_EVENT`` with a COMMIT every ``--batch`` rows.
6. Prints a report and, last, one JSON line with every number.

Exit status: 0 when the run worked (targets missed or not: this is a measurement), 1 when a request
failed, the stored count is wrong or the server could not be run.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cdp import CDP, Settings, migrations
from cdp.ingest.tracking import INSERT_EVENT
from cdp.timeutil import format_ts

TARGET_EVENTS_PER_S = 20_000
TARGET_RATIO = 0.25
KEY_NAME = "bench"
SUCCESS = {"success": True}
# The columns this benchmark computes itself for each message, in the order of ``_row``.
COLUMNS = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "integrations",
    "extra",
    "source",
    "write_key_id",
    "quality_flags",
)
# Set at the moment of sending or arrival: they differ between the server's rows and the baseline's by design.
ARRIVAL = ("timestamp", "sent_at", "received_at")
# Each body ends with ``"sentAt":"<24 characters>"}``; clients stamp the real time there as they send.
_STAMP = len('2026-01-01T00:00:00.000Z"}')


class BenchError(Exception):
    """The run itself failed (not a slow result): exit status 1."""


# -- realistic Segment messages ----------------------------------------------------------------------

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "frances", "john", "radia", "tim"]
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "hamilton", "thompson", "allen", "backus"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.io"]
PLANS = ["free", "starter", "pro", "enterprise"]
CATEGORIES = ["Shoes", "Jackets", "Bags", "Hats", "Socks", "Shirts"]
BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
PAGES = [
    ("Home", "/"),
    ("Pricing", "/pricing"),
    ("Product", "/products/{sku}"),
    ("Category", "/c/{category}"),
    ("Cart", "/cart"),
    ("Blog Post", "/blog/{slug}"),
]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
]
LIBRARIES = [{"name": "analytics.js", "version": "next-1.70.0"}, {"name": "analytics-python", "version": "2.3.2"}]
# (event name, weight); page and identify are weighted alongside.
TRACKS = [
    ("Product Viewed", 24),
    ("Products Searched", 8),
    ("Product Added", 10),
    ("Checkout Started", 5),
    ("Order Completed", 5),
    ("Signed Up", 2),
]
KINDS = [*(name for name, _ in TRACKS), "page", "identify"]
WEIGHTS = [*(w for _, w in TRACKS), 34, 12]


@dataclass
class User:
    user_id: str
    anonymous_id: str
    email: str
    first: str
    last: str
    plan: str
    ip: str
    user_agent: str


@dataclass
class Workload:
    bodies: list[bytes]  # one /v1/batch body per request
    rows: list[list[tuple[Any, ...]]]  # the COLUMNS of the rows the ingest path stores, per request
    events: int
    body_bytes: int
    by_kind: dict[str, int] = field(default_factory=dict)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _dumps(value: dict[str, Any] | None) -> str | None:
    """As the ingest path stores a JSON column: orjson, and NULL for a missing or empty object."""
    return orjson.dumps(value).decode() if value else None


def _catalogue(rng: random.Random) -> list[dict[str, Any]]:
    products = []
    for n in range(200):
        category = rng.choice(CATEGORIES)
        products.append(
            {
                "product_id": f"prod_{n:05d}",
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "category": category,
                "name": f"{rng.choice(BRANDS)} {category[:-1]} {n}",
                "brand": rng.choice(BRANDS),
                "price": round(rng.uniform(5, 250), 2),
            }
        )
    return products


def _users(rng: random.Random, count: int) -> list[User]:
    users = []
    for n in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        users.append(
            User(
                user_id=f"usr_{n:08d}",
                anonymous_id=_uuid(rng),
                email=f"{first}.{last}{n}@{rng.choice(DOMAINS)}",  # already normalised (lower case)
                first=first,
                last=last,
                plan=rng.choice(PLANS),
                ip=f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                user_agent=rng.choice(USER_AGENTS),
            )
        )
    return users


def _message(rng: random.Random, kind: str, user: User, products: list[dict[str, Any]], when: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"messageId": _uuid(rng), "timestamp": when}
    if kind == "identify" or rng.random() < 0.7:  # identified users also carry their anonymousId
        msg["userId"] = user.user_id
    msg["anonymousId"] = user.anonymous_id
    context: dict[str, Any] = {
        "library": LIBRARIES[0] if kind == "page" or rng.random() < 0.8 else LIBRARIES[1],
        "ip": user.ip,
        "userAgent": user.user_agent,
        "locale": "en-US",
        "timezone": "Europe/Berlin",
    }
    product = rng.choice(products)
    if kind == "page":
        title, path = rng.choice(PAGES)
        path = path.format(
            sku=product["sku"].lower(), category=product["category"].lower(), slug=f"post-{rng.randrange(500)}"
        )
        url = f"https://shop.example.com{path}"
        referrer = rng.choice(["", "https://www.google.com/", "https://news.example.net/"])
        msg.update(type="page", name=title)
        msg["properties"] = {"title": title, "path": path, "url": url, "referrer": referrer}
        context["page"] = {"path": path, "referrer": referrer, "search": "", "title": title, "url": url}
    elif kind == "identify":
        msg["type"] = "identify"
        msg["traits"] = {
            "email": user.email,
            "first_name": user.first.title(),
            "last_name": user.last.title(),
            "plan": user.plan,
            "logins": rng.randrange(1, 300),
            "newsletter": rng.random() < 0.4,
        }
    else:
        msg.update(type="track", event=kind)
        if kind == "Order Completed":
            items = [{**p, "quantity": rng.randrange(1, 4)} for p in rng.sample(products, rng.randrange(1, 5))]
            total = round(sum(p["price"] * p["quantity"] for p in items), 2)
            msg["properties"] = {
                "order_id": f"ord_{rng.getrandbits(40):010x}",
                "total": total,
                "revenue": round(total * 0.9, 2),
                "shipping": 4.99,
                "tax": round(total * 0.08, 2),
                "currency": "USD",
                "products": items,
            }
        elif kind == "Products Searched":
            msg["properties"] = {"query": rng.choice(["red shoes", "rain jacket", "wool socks", "tote bag"])}
        elif kind == "Signed Up":
            msg["properties"] = {"method": rng.choice(["email", "google", "github"]), "plan": user.plan}
        else:
            msg["properties"] = {**product, "currency": "USD", "quantity": 1, "position": rng.randrange(1, 25)}
    msg["context"] = context
    return msg


def _row(msg: dict[str, Any], sent: datetime, received: datetime, key_id: str) -> tuple[Any, ...]:
    """The ``COLUMNS`` the ingest path stores for one of the messages above (they need no normalisation)."""
    original = datetime.fromisoformat(msg["timestamp"])
    kind = msg["type"]
    return (
        msg["messageId"],
        kind,
        msg.get("event") or msg.get("name"),
        msg.get("userId"),
        msg.get("anonymousId"),
        None,
        None,
        format_ts(received - (sent - original)),
        format_ts(original),
        format_ts(sent),
        format_ts(received),
        _dumps(msg.get("properties")),
        _dumps(msg.get("traits")),
        _dumps(msg.get("context")),
        None,
        None,
        KEY_NAME,
        key_id,
        None,
    )


def generate(events: int, batch: int, key_id: str, seed: int = 42) -> Workload:
    rng = random.Random(seed)
    products = _catalogue(rng)
    users = _users(rng, max(50, events // 25))
    now = datetime.now(UTC).replace(microsecond=0)
    bodies: list[bytes] = []
    rows: list[list[tuple[Any, ...]]] = []
    by_kind: dict[str, int] = {}
    body_bytes = 0
    for start in range(0, events, batch):
        sent = now  # replaced by the time of sending in each body (see ``stamp``)
        messages = []
        for _ in range(start, min(start + batch, events)):
            kind = rng.choices(KINDS, WEIGHTS)[0]
            when = format_ts(sent - timedelta(milliseconds=rng.randrange(0, 5_000)))
            messages.append(_message(rng, kind, rng.choice(users), products, when))
            by_kind[kind] = by_kind.get(kind, 0) + 1
        body = orjson.dumps({"batch": messages, "sentAt": format_ts(sent)})
        if not body.endswith(f'"sentAt":"{format_ts(sent)}"}}'.encode()):
            raise BenchError("a batch body does not end with its sentAt")
        bodies.append(body)
        body_bytes += len(body)
        # The baseline "receives" each batch the moment it was sent.
        rows.append([_row(m, sent, sent, key_id) for m in messages])
    return Workload(bodies=bodies, rows=rows, events=events, body_bytes=body_bytes, by_kind=by_kind)


# -- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cdp_executable() -> str:
    here = Path(sys.executable).parent / "cdp"
    return str(here) if here.exists() else (shutil.which("cdp") or "cdp")


def start_server(
    db: Path, port: int, log: Path, callgrind: Path | None = None, writer: str = "auto"
) -> subprocess.Popen[bytes]:
    cmd = [cdp_executable(), "serve", "--db", str(db), "--port", str(port), "--no-scheduler", "--log-level", "warning"]
    env = {**os.environ, "CDP_INGEST_WRITER": writer}
    if callgrind is not None:
        # Instrumentation starts off (startup runs at near native speed) and is switched on for the sends.
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={callgrind}", *cmd]
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + (600 if callgrind is not None else 60)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"the server exited with status {server.returncode}:\n{_tail(log)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise BenchError(f"the server did not answer /healthz within 60 s:\n{_tail(log)}")


def callgrind_control(server: subprocess.Popen[bytes], *args: str) -> None:
    done = subprocess.run(["callgrind_control", *args, str(server.pid)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)} failed: {done.stderr or done.stdout}")


def callgrind_instructions(out: Path) -> int:
    """Instructions counted between switching instrumentation on and the dump (its ``totals:`` line)."""
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise BenchError(f"no totals in {out}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly, the store checkpoints and closes
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def proc_status(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (e.g. VmHWM, the peak RSS), in bytes; None if unavailable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server and its ingest writer process), from /proc."""
    found = [pid]
    for current in found:
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    found += [int(c) for c in children.read().split()]
        except OSError:
            continue
    return found


def _summed(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its children (all their threads) from /proc/<pid>/stat."""
    return _summed([_own_cpu_seconds(p) for p in process_tree(pid)])


def _own_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def proc_write_bytes(pid: int | str) -> int | None:
    """Bytes a process (and its children) caused to be written to storage (``write_bytes`` of /proc/<pid>/io)."""
    pids: list[int | str] = [pid] if pid == "self" else list(process_tree(int(pid)))
    total = _summed([_own_write_bytes(p) for p in pids])
    return int(total) if total is not None else None


def _own_write_bytes(pid: int | str) -> int | None:
    try:
        with open(f"/proc/{pid}/io") as io:
            for line in io:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), to tell how loaded the machine was."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _delta(after: float | None, before: float | None) -> float | None:
    return after - before if after is not None and before is not None else None


def _background(busy: float | None, *own: float | None) -> float | None:
    """CPU seconds used outside this benchmark's processes (other programs, kernel writeback threads)."""
    if busy is None or any(x is None for x in own):
        return None
    return max(0.0, busy - sum(x for x in own if x is not None))


# -- the clients ---------------------------------------------------------------------------------------


def stamp(body: bytes) -> bytes:
    """The body with ``sentAt`` set to now, as an SDK does when it flushes a batch."""
    return body[:-_STAMP] + format_ts(datetime.now(UTC)).encode() + b'"}'


def client(
    index: int,
    port: int,
    authorization: str,
    bodies: list[bytes],
    barrier: Any,
    results: Any,
) -> None:
    """One client process: a keep-alive connection, its share of the bodies, timings sent back."""
    headers = {"Content-Type": "application/json", "Authorization": authorization}
    failures = 0
    errors: list[str] = []
    latencies: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(body: bytes) -> None:
        nonlocal conn, failures
        try:
            conn.request("POST", "/v1/batch", body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200 or orjson.loads(data) != SUCCESS:
                failures += 1
                if len(errors) < 5:
                    errors.append(f"HTTP {response.status}: {data[:300]!r}")
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError) as exc:
            failures += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    # Warm up the connection, the route and the server's key cache with an empty batch (stores nothing).
    post(b'{"batch":[]}')
    cpu = time.process_time()
    barrier.wait(timeout=300)
    started = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    for body in bodies:
        t = time.perf_counter()
        post(stamp(body))
        latencies.append(time.perf_counter() - t)
    finished = time.perf_counter()
    conn.close()
    results.put(
        {
            "index": index,
            "started": started,
            "finished": finished,
            "latencies": latencies,
            "failures": failures,
            "errors": errors,
            "cpu": time.process_time() - cpu,
        }
    )


def run_clients(port: int, secret: str, bodies: list[bytes], clients: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")  # children inherit the bodies without pickling them
    authorization = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=client,
            args=(i, port, authorization, bodies[i::clients], barrier, results),
            name=f"bench-client-{i}",
            daemon=True,
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    try:
        try:
            barrier.wait(timeout=300)
        except threading.BrokenBarrierError as exc:
            raise BenchError("the clients did not all get ready (see the errors above)") from exc
        reports: list[dict[str, Any]] = []
        while len(reports) < clients:
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty as exc:  # check the clients are still alive
                if len(reports) + sum(p.is_alive() for p in procs) < clients:
                    raise BenchError("a client process died before reporting") from exc
        for proc in procs:
            proc.join(timeout=10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return {
        "started": min(r["started"] for r in reports),
        "finished": max(r["finished"] for r in reports),
        "latencies": sorted(x for r in reports for x in r["latencies"]),
        "failures": sum(r["failures"] for r in reports),
        "errors": [e for r in reports for e in r["errors"]],
        "client_cpu": sum(r["cpu"] for r in reports),
    }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- checks on the server's store ------------------------------------------------------------------------


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def stored_count(db: Path) -> int:
    conn = read_only(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def compare_rows(db: Path, workload: Workload, samples: int = 500) -> tuple[int, int, list[str]]:
    """(rows compared, rows that differ, first differences): the server's rows against the baseline's."""
    flat = [row for rows in workload.rows for row in rows]
    picked = flat[:: max(1, len(flat) // samples)]
    columns = [c for c in COLUMNS if c not in ARRIVAL]
    indexes = [COLUMNS.index(c) for c in columns]
    differ = 0
    notes: list[str] = []
    conn = read_only(db)
    try:
        for row in picked:
            sql = f"SELECT {', '.join(columns)} FROM events WHERE message_id = ?"
            stored = conn.execute(sql, (row[0],)).fetchone() or (None,) * len(columns)
            expected = tuple(row[i] for i in indexes)
            if stored != expected:
                differ += 1
                if len(notes) < 3:
                    diffs = [
                        f"{c}: stored {s!r} != baseline {e!r}"
                        for c, s, e in zip(columns, stored, expected, strict=True)
                        if s != e
                    ]
                    notes.append(f"{row[0]}: " + "; ".join(diffs)[:400])
    finally:
        conn.close()
    return len(picked), differ, notes


# -- the baseline ----------------------------------------------------------------------------------------


def insert_columns() -> list[str]:
    match = re.search(r"INTO events \(([^)]*)\)", INSERT_EVENT)
    if match is None:
        raise BenchError(f"cannot read the columns of cdp.ingest.tracking.INSERT_EVENT: {INSERT_EVENT!r}")
    return [c.strip() for c in match.group(1).split(",")]


def baseline_rows(workload: Workload, server_db: Path) -> tuple[list[list[tuple[Any, ...]]], list[str]]:
    """The rows in the order of INSERT_EVENT's columns, per request, and the columns copied from the server.

    A column the ingest path computes beyond ``COLUMNS`` (say, a profile id from identity resolution)
    is taken from the server's stored rows, so the baseline inserts exactly the same values.
    """
    columns = insert_columns()
    copied = [c for c in columns if c not in COLUMNS]
    stored: dict[str, tuple[Any, ...]] = {}
    if copied:
        conn = read_only(server_db)
        try:
            for message_id, *values in conn.execute(f"SELECT message_id, {', '.join(copied)} FROM events"):
                stored[message_id] = tuple(values)
        finally:
            conn.close()
    plan = [("own", COLUMNS.index(c)) if c in COLUMNS else ("copied", copied.index(c)) for c in columns]
    out = []
    for rows in workload.rows:
        batch = []
        for row in rows:
            extra = stored.get(row[0], (None,) * len(copied))
            batch.append(tuple(row[i] if where == "own" else extra[i] for where, i in plan))
        out.append(batch)
    return out, copied


def raw_sqlite(db: Path, batches: list[list[tuple[Any, ...]]], events: int) -> dict[str, Any]:
    """Insert every row with executemany, one COMMIT per request's worth of rows: seconds and bytes written."""
    settings = Settings(db=db)
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # The pragmas of Store._connect.
        conn.execute(f"PRAGMA busy_timeout={int(settings.busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous={settings.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        migrations.apply(conn)
        busy, cpu, written = machine_busy_seconds(), time.process_time(), proc_write_bytes("self")
        started = time.perf_counter()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENT, rows)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        busy = _delta(machine_busy_seconds(), busy)
        written = _delta(proc_write_bytes("self"), written)
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    if count != events:
        raise BenchError(f"the baseline stored {count} rows, expected {events}")
    return {"seconds": elapsed, "cpu": cpu, "written": written, "background": _background(busy, cpu)}


# -- the run -----------------------------------------------------------------------------------------------


def bench(
    events: int, batch: int, clients: int, say: Any, callgrind: bool = False, writer: str = "auto"
) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    settings = Settings()
    if batch > settings.max_batch_events:
        raise BenchError(f"--batch {batch} is over the server's limit of {settings.max_batch_events} messages")
    workdir = Path(tempfile.mkdtemp(prefix="cdp-bench-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        db = workdir / "cdp.db"
        with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
            info, secret = cdp.keys.create("write", KEY_NAME)

        say(f"generating {events:,} events in batches of {batch} ...")
        t = time.perf_counter()
        workload = generate(events, batch, info.id)
        biggest = max(len(b) for b in workload.bodies)
        if biggest > settings.max_batch_bytes:
            raise BenchError(
                f"a batch body is {biggest:,} bytes, over the server's limit of {settings.max_batch_bytes:,}; "
                "use a smaller --batch"
            )
        say(
            f"  {len(workload.bodies):,} bodies, {workload.body_bytes / 1e6:.1f} MB "
            f"({workload.body_bytes / events:.0f} bytes/event) in {time.perf_counter() - t:.1f} s"
        )

        port = free_port()
        say(f"starting cdp serve on 127.0.0.1:{port} ...")
        grind = workdir / "callgrind.out" if callgrind else None
        # Under callgrind the write half runs in the server process, so one count covers all the work.
        writer = "thread" if callgrind else writer
        server = start_server(db, port, workdir / "server.log", grind, writer)
        instructions: int | None = None
        if grind is not None:
            callgrind_control(server, "-i", "on")
        cpu_before, written = proc_cpu_seconds(server.pid), proc_write_bytes(server.pid)
        main_before = _own_cpu_seconds(server.pid)
        busy, own_cpu = machine_busy_seconds(), time.process_time()

        say(f"sending with {clients} client processes ...")
        sent = run_clients(port, secret, workload.bodies, clients)
        if grind is not None:
            callgrind_control(server, "-d")
            callgrind_control(server, "-i", "off")
            instructions = callgrind_instructions(Path(f"{grind}.1"))
        server_cpu = _delta(proc_cpu_seconds(server.pid), cpu_before)
        main_cpu = _delta(_own_cpu_seconds(server.pid), main_before)
        written = _delta(proc_write_bytes(server.pid), written)
        background = _background(
            _delta(machine_busy_seconds(), busy), server_cpu, sent["client_cpu"], time.process_time() - own_cpu
        )
        wall = sent["finished"] - sent["started"]
        peak_rss = _summed([proc_status(p, "VmHWM") for p in process_tree(server.pid)])
        if server.poll() is not None:
            problems.append(
                f"the server exited during the run (status {server.returncode}):\n{_tail(workdir / 'server.log')}"
            )
        if sent["failures"]:
            problems.append(f"{sent['failures']} requests failed; first: " + " | ".join(sent["errors"][:3]))

        count = stored_count(db)
        if count != events:
            problems.append(f"the store holds {count} events, expected {events}")
        compared, differ, notes = compare_rows(db, workload)
        stop_server(server)
        server = None

        say("baseline: raw SQLite executemany of the same rows ...")
        batches, copied = baseline_rows(workload, db)
        raw = raw_sqlite(workdir / "raw.db", batches, events)
        raw_seconds = raw["seconds"]

        http_rate = events / wall
        raw_rate = events / raw_seconds
        ratio = http_rate / raw_rate
        lat = sent["latencies"]
        result: dict[str, Any] = {
            "bench": "ingest",
            "events": events,
            "clients": clients,
            "writer": writer,
            "batch": batch,
            "requests": len(workload.bodies),
            "bytes_per_event": round(workload.body_bytes / events),
            "http_seconds": round(wall, 3),
            "http_events_per_s": round(http_rate),
            "raw_sqlite_seconds": round(raw_seconds, 3),
            "raw_sqlite_rows_per_s": round(raw_rate),
            "ratio": round(ratio, 3),
            "latency_ms": {
                "p50": round(percentile(lat, 0.50) * 1000, 2),
                "p95": round(percentile(lat, 0.95) * 1000, 2),
                "p99": round(percentile(lat, 0.99) * 1000, 2),
                "max": round(lat[-1] * 1000, 2) if lat else None,
            },
            "server_peak_rss_mb": round(peak_rss / 2**20, 1) if peak_rss else None,
            "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
            "server_cpu_per_event_us": round(server_cpu / events * 1e6, 1) if server_cpu is not None else None,
            # the HTTP process alone (the rest is its ingest writer process)
            "server_main_cpu_per_event_us": round(main_cpu / events * 1e6, 1) if main_cpu is not None else None,
            "server_written_kb_per_event": round(written / events / 1024, 1) if written is not None else None,
            # --callgrind: instructions the server executed per event (all threads), steady on a busy machine.
            "server_instructions_per_event": round(instructions / events) if instructions is not None else None,
            "client_cpu_seconds": round(sent["client_cpu"], 2),
            "raw_sqlite_written_kb_per_event": (
                round(raw["written"] / events / 1024, 1) if raw["written"] is not None else None
            ),
            # CPU used outside this benchmark's processes meanwhile, in cores: other programs, and kernel
            # threads such as disk writeback. Well above what a quiet machine shows, the numbers are disturbed.
            "background_cores_http": round(background / wall, 2) if background is not None else None,
            "background_cores_raw": (
                round(raw["background"] / raw_seconds, 2) if raw["background"] is not None else None
            ),
            "tmpdir": str(workdir.parent),
            "cores": os.cpu_count(),
            "failed_requests": sent["failures"],
            "stored": count,
            "rows_compared": compared,
            "rows_differing": differ,
            "baseline_columns_from_server": copied,
            "targets": {
                "events_per_s": TARGET_EVENTS_PER_S,
                "ratio": TARGET_RATIO,
                "events_per_s_met": http_rate >= TARGET_EVENTS_PER_S,
                "ratio_met": ratio >= TARGET_RATIO,
            },
            "mix": workload.by_kind,
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "ok": not problems,
        }
        if differ:
            # Not fatal: the HTTP numbers stand, but the baseline no longer inserts what ingest stores.
            say(f"warning: {differ} of {compared} sampled rows differ from the baseline's: " + " | ".join(notes))
        return result, problems
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)


def report(r: dict[str, Any]) -> None:
    def met(flag: bool) -> str:
        return "met" if flag else "MISSED"

    lat = r["latency_ms"]
    t = r["targets"]
    loads = [x for x in (r["background_cores_http"], r["background_cores_raw"]) if x is not None]
    busy = "  <- busy machine? numbers may be disturbed" if loads and max(loads) > 0.5 else ""
    rss = f"{r['server_peak_rss_mb']} MB" if r["server_peak_rss_mb"] is not None else "n/a"
    lines = [
        "",
        f"cdp ingest benchmark  ({r['cores']} cores, Python {r['python']}, SQLite {r['sqlite']})",
        f"  events                {r['events']:>12,}   ({r['requests']:,} requests of {r['batch']}, "
        f"{r['bytes_per_event']} bytes/event)",
        f"  clients               {r['clients']:>12}   (server's ingest writer: {r['writer']})",
        f"  HTTP /v1/batch        {r['http_events_per_s']:>12,} events/s   ({r['http_seconds']} s)",
        f"  raw SQLite            {r['raw_sqlite_rows_per_s']:>12,} rows/s     ({r['raw_sqlite_seconds']} s, "
        f"executemany + COMMIT every {r['batch']} rows)",
        f"  ratio HTTP / raw      {r['ratio']:>12.3f}",
        f"  request latency       p50 {lat['p50']} ms   p95 {lat['p95']} ms   p99 {lat['p99']} ms"
        f"   max {lat['max']} ms",
        f"  server                peak RSS {rss}, CPU {r['server_cpu_seconds']} s "
        f"({r['server_cpu_per_event_us']} us/event, {r['server_main_cpu_per_event_us']} of them in the HTTP process);"
        f" clients CPU {r['client_cpu_seconds']} s",
        *(
            [
                f"  server instructions   {r['server_instructions_per_event']:,} per event "
                "(callgrind: the rates above mean nothing)"
            ]
            if r["server_instructions_per_event"] is not None
            else []
        ),
        f"  disk writes           server {r['server_written_kb_per_event']} KB/event, raw SQLite "
        f"{r['raw_sqlite_written_kb_per_event']} KB/event  (store in {r['tmpdir']}; set TMPDIR to move it)",
        f"  CPU outside the bench {r['background_cores_http']} cores during HTTP, {r['background_cores_raw']} during "
        f"the baseline{busy}",
        f"  stored                {r['stored']:,} events; {r['failed_requests']} failed requests; "
        f"{r['rows_differing']} of {r['rows_compared']} sampled rows differ from the baseline's",
        *(
            [f"  baseline columns      {', '.join(r['baseline_columns_from_server'])} copied from the server's rows"]
            if r["baseline_columns_from_server"]
            else []
        ),
        f"  target >= {t['events_per_s']:,} events/s   {met(t['events_per_s_met'])}",
        f"  target >= {t['ratio']} of raw SQLite   {met(t['ratio_met'])}",
        "",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events to send (default 200000)")
    parser.add_argument("--batch", type=int, default=100, help="messages per /v1/batch request (default 100)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes (default 4)")
    parser.add_argument("--json-only", action="store_true", help="print only the final JSON line")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run the server under valgrind's callgrind and report its instructions per event (slow; "
        "a CPU measure that a busy machine does not disturb)",
    )
    parser.add_argument(
        "--writer",
        choices=["auto", "process", "thread"],
        default="auto",
        help="the server's CDP_INGEST_WRITER: auto (cdp serve's default, the ingest writer process), "
        "process, or thread (validation and writing in one process, as before the writer process)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.batch < 1 or args.clients < 1:
        parser.error("--events, --batch and --clients must be at least 1")

    def say(text: str) -> None:
        if not args.json_only:
            print(text, file=sys.stderr, flush=True)

    try:
        result, problems = bench(args.events, args.batch, args.clients, say, args.callgrind, args.writer)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps({"bench": "ingest", "ok": False, "error": str(exc)}))
        return 1
    if not args.json_only:
        report(result)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(json.dumps(result, separators=(",", ":")))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
