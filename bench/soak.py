"""Soak: sustained ingest with segment runs, resolution runs and webhook deliveries mixed in.

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --minutes 3 --rate 1500 --report-seconds 30

It starts the real server (`cdp serve`, scheduler on, resolution every minute) on a fresh store, a webhook
receiver on loopback subscribed to every segment, two rule segments computed every minute by the scheduler
and on demand over the API, and `--clients` processes posting `/v1/batch` at `--rate` events/s in all. Every
report line prints the RSS of the server and of its ingest writer process, the size of the WAL (now, and the
largest seen since the previous line, sampled every half second), webhook messages received, on-demand segment
runs and resolution runs finished. `--profile 60` also logs, each minute, the allocation sites that grew in both
processes (to serve.log beside the store). At the end the server is stopped (SIGTERM) and the store is
checked: every acknowledged messageId stored, `integrity_check` ok.

Targets: RSS of each process flat after warm-up (the last third of the run within 10% of the middle third),
the WAL at most 64 MB at every sample, 0 failed requests, acknowledged = stored. Missing a target exits 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("cdp"))
WAL_LIMIT = 64 * 1024 * 1024
PLANS = ["free", "pro", "team"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory in MB: all of it (VmRSS), or its anonymous part (RssAnon: heaps, arenas,
    caches; without the shared libraries' pages, which a process maps in once as it first runs their code)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def writer_child(pid: int) -> int | None:
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found = children.read().split()
        except OSError:  # the thread ended since the listing
            continue
        for child in found:
            try:
                if b"cdp.ingest.writer" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
            except OSError:
                continue
    return None


def message(rng: random.Random, n: int) -> dict[str, Any]:
    user = f"user{rng.randrange(20_000)}"
    kind = rng.random()
    if kind < 0.15:
        return {
            "type": "identify",
            "userId": user,
            "messageId": uuid.uuid4().hex,
            "traits": {"plan": rng.choice(PLANS), "email": f"{user}@example.com", "n": n},
        }
    return {
        "type": "track",
        "userId": user,
        "event": rng.choice(["Order Completed", "Product Viewed", "Signed In"]),
        "messageId": uuid.uuid4().hex,
        "properties": {"revenue": round(rng.random() * 200, 2), "sku": f"sku{rng.randrange(500)}"},
    }


def client(url: str, key: str, rate: float, until: float, seed: int, out: Any) -> None:
    """One sender: batches of 100 at ``rate`` events/s; acknowledged ids go to ``out`` (a file path)."""
    rng = random.Random(seed)
    acked = failed = 0
    with open(out, "w") as ids, httpx.Client(base_url=url, auth=(key, ""), timeout=60) as http:
        next_at = time.monotonic()
        n = 0
        while time.monotonic() < until:
            batch = [message(rng, n + i) for i in range(100)]
            n += 100
            try:
                answer = http.post("/v1/batch", json={"batch": batch})
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                acked += len(batch)
                ids.write("\n".join(m["messageId"] for m in batch) + "\n")
            else:
                failed += 1
            next_at += 100 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        ids.write(f"#{acked} {failed}\n")


def resolutions(db: Path) -> tuple[int, bool]:
    """Resolution runs that finished so far, and whether one is running now."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            done, running = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'running')"
                " FROM resolution_runs"
            ).fetchone()
            return int(done), bool(running)
    except sqlite3.Error:
        return -1, False


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second, all clients (default 2000)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--report-seconds", type=float, default=60.0, help="seconds between report lines")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a temporary dir)")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="trace allocations in the server and its writer (CDP_TRACEMALLOC_SECONDS): every SECONDS the sites"
        " that grew most go to serve.log in the store's directory",
    )
    args = parser.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="cdp-soak-"))
    db = work / "soak.db"
    subprocess.run([CLI, "migrate", "--db", str(db)], check=True, capture_output=True)
    write_key = (
        subprocess.run(
            [CLI, "keys", "create", "--kind", "write", "--db", str(db)], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    admin = (
        subprocess.run(
            [CLI, "keys", "create", "--kind", "admin", "--db", str(db)], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CDP_RESOLVE_SCHEDULE": "1m", "CDP_WEBHOOKS_ALLOW_PRIVATE_URLS": "true"}
    if args.profile:
        env["CDP_TRACEMALLOC_SECONDS"] = str(args.profile)
    server = subprocess.Popen(
        [CLI, "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / "serve.log", "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            print("the server did not start; see", work / "serve.log")
            return 1
        time.sleep(0.1)
    receiver = Receiver()
    admin_http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=120)
    admin_http.post("/v1/webhooks", json={"url": receiver.url, "events": ["segment.entered", "segment.exited"]})
    for plan in ("pro", "team"):
        admin_http.post(
            "/v1/segments",
            json={
                "key": plan,
                "name": plan,
                "schedule": {"every": "1m"},
                "rule": {"trait": "plan", "op": "eq", "value": plan},
            },
        )
    admin_http.post(
        "/v1/segments",
        json={
            "key": "buyers",
            "name": "Buyers",
            "rule": {"event": "Order Completed", "within": "1d", "count": {"op": "gte", "value": 2}},
        },
    )

    started = time.monotonic()
    until = started + args.minutes * 60
    files = [work / f"acked-{i}.txt" for i in range(args.clients)]
    senders = [
        mp.Process(target=client, args=(url, write_key, args.rate / args.clients, until, i, str(files[i])))
        for i in range(args.clients)
    ]
    for sender in senders:
        sender.start()
    samples: list[dict[str, Any]] = []
    child = writer_child(server.pid)
    print(
        f"{'min':>5} {'server MB':>10} {'anon':>6} {'writer MB':>10} {'WAL MB':>8} {'WAL max':>8} {'webhooks':>9}"
        f" {'computes':>9} {'resolved':>9}"
    )
    wal = Path(f"{db}-wal")
    wal_max = 0.0  # the largest WAL seen since the last report line (sampled every half second)
    computes = [0]

    def compute_now_and_then() -> None:  # an on-demand segment run every 20 s, beside the scheduled ones
        while time.monotonic() + 20 < until:
            time.sleep(20)
            computes[0] += admin_http.post("/v1/segments/buyers/compute").status_code == 200

    computing = threading.Thread(target=compute_now_and_then, daemon=True)
    computing.start()
    next_report = started + args.report_seconds
    while time.monotonic() < until + 1:
        now = time.monotonic()
        if wal.exists():
            wal_max = max(wal_max, wal.stat().st_size / 2**20)
        if now >= next_report or now >= until:
            child = writer_child(server.pid) or child
            resolved, resolving = resolutions(db)
            sample = {
                "minute": round((now - started) / 60, 2),
                "server_mb": round(rss_mb(server.pid), 1),
                "server_anon_mb": round(rss_mb(server.pid, "RssAnon"), 1),
                "writer_mb": round(rss_mb(child), 1) if child else 0.0,
                "wal_mb": round(wal.stat().st_size / 2**20, 1) if wal.exists() else 0.0,
                "wal_max_mb": round(wal_max, 1),
                "webhooks": receiver.count,
                "resolutions": resolved,
                "resolving": resolving,
            }
            wal_max = 0.0
            samples.append(sample)
            print(
                f"{sample['minute']:>5} {sample['server_mb']:>10} {sample['server_anon_mb']:>6}"
                f" {sample['writer_mb']:>10} {sample['wal_mb']:>8} {sample['wal_max_mb']:>8}"
                f" {sample['webhooks']:>9} {computes[0]:>9}"
                f" {sample['resolutions']:>9}{' (running)' if resolving else ''}",
                flush=True,
            )
            if now >= until:
                break
            next_report += args.report_seconds
        time.sleep(0.5)
    for sender in senders:
        sender.join()
    computing.join()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)

    acked: set[str] = set()
    failed = 0
    for path in files:
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                failed += int(line.split()[1])
            elif line:
                acked.add(line)
    with closing(sqlite3.connect(db)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = {row[0] for row in conn.execute("SELECT message_id FROM events")}
    lost = len(acked - stored)
    warm = [s for s in samples if s["minute"] > args.minutes / 3]
    third = max(1, len(warm) // 2)
    middle, last = warm[:third], warm[third:]

    def flat(key: str) -> bool:
        if not middle or not last:
            return True
        base = max(s[key] for s in middle)
        return bool(max(s[key] for s in last) <= base * 1.10)

    result = {
        "minutes": args.minutes,
        "acknowledged": len(acked),
        "stored_of_acknowledged": len(acked) - lost,
        "failed_requests": failed,
        "integrity": integrity,
        "wal_max_mb": max(s["wal_max_mb"] for s in samples),
        "server_rss_mb": [s["server_mb"] for s in samples],
        "server_anon_mb": [s["server_anon_mb"] for s in samples],
        "sampled_during_resolution": [s["minute"] for s in samples if s["resolving"]],
        "writer_rss_mb": [s["writer_mb"] for s in samples],
        "server_rss_flat": flat("server_mb"),
        "writer_rss_flat": flat("writer_mb"),
        "webhooks_received": receiver.count,
        "segment_computes": computes[0],
    }
    ok = (
        lost == 0
        and failed == 0
        and integrity == "ok"
        and result["wal_max_mb"] * 2**20 <= WAL_LIMIT
        and result["server_rss_flat"]
        and result["writer_rss_flat"]
    )
    print(json.dumps({**result, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
