"""The web console's server time per page on a generated store (the store of ``bench/segments.py``).

    .venv/bin/python bench/console.py                            # 100,000 profiles, 1,000,000 events
    .venv/bin/python bench/console.py --profiles 1000000 --events 10000000   # the issue's 1M-profile store

What it does:

1. **Store**: the cached store ``bench/segments.py`` builds for this scale (built on first use, in a cache of
   its own, ``--cache-dir``), copied to a working file; one rule segment is created and computed on it.
2. **Server**: the real ``cdp serve --no-scheduler`` on the working copy; the bench signs in to ``/console``
   through the form with an admin token, like a person.
3. **Pages**, one request at a time over a keep-alive connection, ``--requests`` of each (a quarter as many
   previews): person search (prefixes of real emails, user ids and first names), the person page (random
   live profiles), the segment page, and the builder's preview (a rule over events and traits). The server
   time of each answer is its ``Server-Timing: app;dur=`` header (the console's handler, from request to
   rendered page); the client time, on loopback, is printed beside it.
4. Prints p50/p99 per page and, last, one JSON line with every number.

Targets (the issue's, on 1M profiles): p99 <= 200 ms for search and the person page, preview <= 2 s. On stores
above 10,000 profile rows the console's preview is an estimate from a random sample (``api/console/segments.py``
``PREVIEW_SAMPLE``); the bench also times the exact whole-store preview once and says how often the shown
95 % interval held the exact size.
Exit status: 0 when every request answered 200 (targets met or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.segments import cached_store  # noqa: E402
from cdp import CDP, Settings  # noqa: E402

TARGETS_MS = {"search": 200.0, "person": 200.0, "segment": None, "preview": 2000.0}
SEGMENT = {
    "key": "bench_console",
    "name": "Bench: recent buyers in the US",
    "rule": {
        "all": [
            {"event": "Order Completed", "within": "30d"},
            {"trait": "address.country", "op": "eq", "value": "US"},
        ]
    },
}
PREVIEW = {
    "name": "preview",
    "rule": {
        "all": [
            {"event": "Order Completed", "within": "60d", "count": {"op": "gte", "value": 2}},
            {"trait": "address.country", "op": "in", "value": ["US", "CA"]},
        ]
    },
}


def log(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """One keep-alive connection with the console's cookies."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, float, float]:
        headers = {"Accept": "text/html", "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["X-Console-Fragment"] = "1" if path.endswith("/preview") else "0"
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = response_of(self.conn)
        text = response.read().decode()
        client_ms = (time.perf_counter() - started) * 1000
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        timing = response.getheader("server-timing") or ""
        found = re.search(r"dur=([0-9.]+)", timing)
        return response.status, text, float(found.group(1)) if found else float("nan"), client_ms


def response_of(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    return conn.getresponse()


def sign_in(client: Client, token: str) -> str:
    status, page, *_ = client.request("GET", "/console/sign-in")
    pre = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert status == 200 and pre, "no sign-in form"
    status, _, *_ = client.request("POST", "/console/sign-in", {"csrf_token": pre.group(1), "token": token})
    assert status == 303, f"sign-in answered {status}"
    status, page, *_ = client.request("GET", "/console/people")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert status == 200 and csrf, "not signed in"
    return csrf.group(1)


def samples(db: Path, n: int, rng: random.Random) -> dict[str, list[str]]:
    """Real search prefixes and live profile ids from the store."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ids = [
            r[0]
            for r in conn.execute("SELECT id FROM profiles WHERE merged_into IS NULL ORDER BY random() LIMIT ?", (n,))
        ]
        emails = [r[0] for r in conn.execute(
            "SELECT value FROM identifiers WHERE type = 'email' ORDER BY random() LIMIT ?", (n,))]  # fmt: skip
        users = [r[0] for r in conn.execute(
            "SELECT value FROM identifiers WHERE type = 'user_id' ORDER BY random() LIMIT ?", (n,))]  # fmt: skip
        names = [
            r[0]
            for r in conn.execute(
                "SELECT json_extract(traits, '$.first_name') FROM profiles WHERE merged_into IS NULL"
                " AND json_extract(traits, '$.first_name') IS NOT NULL ORDER BY random() LIMIT ?",
                (n,),
            )
        ]
    finally:
        conn.close()
    queries = [e[: rng.randint(4, 8)] for e in emails] + [u[: rng.randint(5, 9)] for u in users]
    queries += [str(name)[:4] for name in names]
    rng.shuffle(queries)
    return {"ids": ids, "queries": queries[:n]}


def preview_shown(text: str) -> tuple[int, int, int] | None:
    """(size, low, high) of an estimated preview fragment; None for an exact one."""
    if 'data-estimate="true"' not in text:
        return None
    size = re.search(r'data-size="(\d+)"', text)
    interval = re.search(r"interval ([\d,]+) to ([\d,]+)", text)
    if not size or not interval:
        return None
    low, high = (int(v.replace(",", "")) for v in interval.groups())
    return int(size.group(1)), low, high


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--profiles", type=int, default=100_000, help="live profiles of the store (1000000: the issue's)"
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per page (previews: a quarter)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/cdp-bench-console"))
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    store = cached_store(args.cache_dir, args.profiles, args.events, args.rebuild, log)
    work = args.cache_dir / f"console-p{args.profiles}-e{args.events}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(store["path"], work)
    with CDP(Settings(db=work, scheduler_enabled=False)) as cdp:
        token = cdp.keys.create("admin", "bench")[1]
        t = time.perf_counter()
        cdp.segments.create(SEGMENT)
        run = cdp.segments.compute(SEGMENT["key"])
        log(f"segment {SEGMENT['key']}: {run.size:,} members, computed in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        exact_size = cdp.segments.preview(PREVIEW)["size"]
        exact_s = time.perf_counter() - t
        log(f"preview rule, exact (a whole DuckDB pass, as the console did before it sampled): {exact_size:,}"
            f" in {exact_s:.1f} s")  # fmt: skip
    picked = samples(work, args.requests, rng)

    port = free_port()
    cdp_bin = str(Path(sys.executable).with_name("cdp"))
    env = {**os.environ, "CDP_ACCESS_LOG": "false"}
    server = subprocess.Popen(
        [cdp_bin, "serve", "--db", str(work), "--port", str(port), "--no-scheduler", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    failures: list[str] = []
    results: dict[str, dict[str, float]] = {}
    shown: list[tuple[int, int, int] | None] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        client = Client(port)
        csrf = sign_in(client, token)
        plan: dict[str, list[tuple[str, str, dict[str, str] | None]]] = {
            "search": [("GET", f"/console/people?q={quote(q)}", None) for q in picked["queries"]],
            "person": [("GET", f"/console/people/{pid}", None) for pid in picked["ids"]],
            "segment": [("GET", f"/console/segments/{SEGMENT['key']}", None)] * max(args.requests // 4, 5),
            "preview": [("POST", "/console/segments/preview", {"definition": json.dumps(PREVIEW), "csrf_token": csrf})]
            * max(args.requests // 4, 5),
        }
        for page, requests in plan.items():
            client.request(*requests[0])  # warm up (imports, caches)
            server_ms, client_ms = [], []
            for method, path, form in requests:
                status, text, server_time, client_time = client.request(method, path, form)
                if status != 200:
                    failures.append(f"{page} {path}: {status}")
                if page == "preview":
                    shown.append(preview_shown(text))
                server_ms.append(server_time)
                client_ms.append(client_time)
            results[page] = {
                "requests": len(requests),
                "server_p50_ms": round(statistics.median(server_ms), 1),
                "server_p99_ms": round(pct(server_ms, 99), 1),
                "client_p50_ms": round(statistics.median(client_ms), 1),
                "client_p99_ms": round(pct(client_ms, 99), 1),
            }
    finally:
        server.terminate()
        server.wait(timeout=30)

    log(f"\nconsole on {args.profiles:,} profiles and {args.events:,} events (load {os.getloadavg()[0]:.1f})")
    log(f"{'page':<10}{'n':>6}{'server p50':>12}{'server p99':>12}{'client p99':>12}  target p99")
    for page, r in results.items():
        target = TARGETS_MS[page]
        verdict = (
            "" if target is None else (f"<= {target:.0f} ms " + ("met" if r["server_p99_ms"] <= target else "MISSED"))
        )
        log(
            f"{page:<10}{r['requests']:>6}{r['server_p50_ms']:>10.1f}ms{r['server_p99_ms']:>10.1f}ms"
            f"{r['client_p99_ms']:>10.1f}ms  {verdict}"
        )
    estimates = [e for e in shown if e is not None]
    if estimates:
        held = sum(low <= exact_size <= high for _, low, high in estimates)
        log(
            f"preview estimates (random sample each time): {min(e[0] for e in estimates):,} to"
            f" {max(e[0] for e in estimates):,} against the exact {exact_size:,}; the 95 % interval held it in"
            f" {held} of {len(estimates)}"
        )
    for failure in failures[:10]:
        log(f"FAILED {failure}")
    summary: dict[str, Any] = {
        "profiles": args.profiles,
        "events": args.events,
        "pages": results,
        "failures": len(failures),
        "preview_exact": {"size": exact_size, "seconds": round(exact_s, 2)},
        "preview_estimates": [list(e) for e in estimates],
    }
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
