"""Webhook delivery: throughput and latency from a segment run's commit to receipt.

    .venv/bin/python bench/webhooks.py [--profiles 10000] [--rate 500] [--concurrency 10] [--json-only]

What it does, in order:

1. In a temporary directory, starts a receiver in a separate process (a minimal asyncio HTTP/1.1 server on a free
   port of 127.0.0.1) that verifies every request with the third-party ``standardwebhooks`` package
   and notes its arrival time, ``webhook-id`` and the message's ``run_id``; answers 204.
2. Opens a store, ingests ``--profiles`` identified people (``identify`` batches through the library),
   subscribes the receiver and starts the real dispatcher (the one the server runs).
3. **Burst**: one segment run in which every profile enters (``--profiles`` membership changes,
   committed in one transaction). deliveries/s = changes / (last receipt - commit).
4. **Paced**: ``--profiles`` more changes as runs of ``--per-run`` profiles each, started at ``--rate``
   changes/s. Each run is written by ``Engine.record`` scoped to its profiles, as a real-time run is
   (membership diff + outbox rows in one transaction; no DuckDB evaluation, which costs about a second
   per run). Latency of each message = receipt - its run's commit (when ``record`` returned, just
   after COMMIT).
5. Checks every message arrived exactly once with a valid signature, prints a report and, last, one
   JSON line with every number.

Targets: at least 500 deliveries/s (burst) and p95 commit-to-receipt latency at most 1 s (paced at
500 changes/s). Exit status 0 when the run worked (targets met or not), 1 when a message was lost,
duplicated, or failed verification.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cdp import CDP, Settings
from cdp.timeutil import now_iso

TARGET_PER_S = 500
TARGET_P95_S = 1.0


# -- the receiver (its own process) -------------------------------------------------------------------


class ReceiverProtocol:
    """Minimal HTTP/1.1 keep-alive server: it only notes arrival time, headers and body, and answers 204,
    so that it takes as little of the machine as possible from what is measured. Signatures are verified
    with ``standardwebhooks`` for every request when the results are collected (``/_dump``)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + size:
                return
            body = self.buffer[end + 4 : end + 4 + size]
            self.buffer = self.buffer[end + 4 + size :]
            self.respond(head[0].split(" ")[1], headers, body)

    def respond(self, path: str, headers: dict[str, str], body: bytes) -> None:
        at = time.time()
        answer = b""
        if path == "/_secret":
            self.state["secret"] = body.decode()
        elif path == "/_count":
            answer = str(len(self.state["requests"])).encode()
        elif path == "/_dump":
            answer = json.dumps(verify_all(self.state)).encode()
        else:
            self.state["requests"].append((at, headers, body))
        status = b"200 OK" if answer else b"204 No Content"
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: " + str(len(answer)).encode() + b"\r\n\r\n")
        if answer:
            self.transport.write(answer)


def verify_all(state: dict[str, Any]) -> dict[str, Any]:
    from standardwebhooks import Webhook, WebhookVerificationError

    verifier, rows, bad = Webhook(state["secret"]), [], 0
    for at, headers, body in state["requests"]:
        try:
            verifier.verify(body, headers)
        except WebhookVerificationError:
            bad += 1
        rows.append((headers["webhook-id"], at, json.loads(body)["data"].get("run_id")))
    return {"rows": rows, "bad": bad}


def serve_receiver(port: int) -> None:
    import asyncio

    state: dict[str, Any] = {"secret": "", "requests": []}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ReceiverProtocol(state), "127.0.0.1", port, backlog=1024)  # type: ignore[arg-type, return-value]
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(url: str, body: bytes = b"") -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as answer:
        result: bytes = answer.read()
        return result


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-receiver", str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            call(base + "/_count")
            return proc, base
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the receiver did not start") from None
            time.sleep(0.05)


def received(base: str) -> tuple[list[tuple[str, float, int | None]], int]:
    dump = json.loads(call(base + "/_dump"))
    return [(str(i), float(at), run_id) for i, at, run_id in dump["rows"]], int(dump["bad"])


def wait_for(base: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(call(base + "/_count")) < count and time.monotonic() < deadline:
        time.sleep(0.2)


# -- the run ------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by another process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_busy_share(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over a second (other work on a shared machine)."""

    def read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"profiles": args.profiles, "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    out["busy_share_before"] = round(cpu_busy_share(), 2)
    workdir = Path(tempfile.mkdtemp(prefix="cdp-bench-webhooks-"))
    receiver, base = start_receiver()
    settings = Settings(
        db=workdir / "cdp.db",
        scheduler_enabled=False,
        webhooks_allow_private_urls=True,
        webhooks_concurrency_per_endpoint=args.concurrency,
    )
    cdp = CDP(settings)
    try:
        _, key = cdp.keys.create("write", "bench")
        started = time.perf_counter()
        n, per_run = args.profiles, args.per_run
        for start in range(0, n, 500):
            batch = [
                {"type": "identify", "userId": f"user-{i}", "traits": {"plan": "pro"}}
                for i in range(start, min(n, start + 500))
            ]
            cdp.ingest.batch({"batch": batch}, write_key=key)
        out["ingest_seconds"] = round(time.perf_counter() - started, 2)
        cdp.segments.create({"key": "all", "name": "Everyone", "rule": {"trait": "plan", "op": "eq", "value": "pro"}})
        hook = cdp.webhooks.create(base + "/hook", events=["segment.entered"])
        call(base + "/_secret", hook["secret"].encode())
        cdp.webhooks.start()

        # Burst: every profile enters one segment in one run.
        cdp.identity.refresh_traits()
        result = cdp.segments.compute("all")
        committed = time.time()
        cpu0, receiver_cpu0 = time.process_time(), process_cpu(receiver.pid)
        assert result.entered == n, result
        wait_for(base, n, timeout=600)
        cpu = time.process_time() - cpu0
        receiver_cpu = process_cpu(receiver.pid) - receiver_cpu0
        rows, _ = received(base)
        latencies = [at - committed for _, at, _ in rows]
        last = max(at for _, at, _ in rows)
        out["burst"] = {
            "changes": n,
            "run_ms": result.duration_ms,
            "deliveries_per_s": round(n / (last - committed), 1),
            "latency_p50_s": round(pct(latencies, 0.5), 3),
            "latency_p95_s": round(pct(latencies, 0.95), 3),
            "cpu_ms_per_delivery": round(1000 * cpu / n, 3),
            "deliveries_per_cpu_second": round(n / cpu, 1),
            "receiver_cpu_ms_per_request": round(1000 * receiver_cpu / n, 3),
        }

        # Paced: runs of per_run profiles each, started at args.rate changes/s. Each run is written by
        # Engine.record, scoped to its profiles as a real-time run is: the membership diff and the outbox
        # rows in one transaction, like every segment run (a DuckDB evaluation would add ~1 s per run here).
        profile_ids = [r["id"] for r in cdp.store.query("SELECT id FROM profiles ORDER BY id")]
        segment = {"key": "paced", "name": "Paced"}
        cdp.segments.create({**segment, "rule": {"trait": "plan", "op": "eq", "value": "none"}})
        commits: dict[int, float] = {}
        interval = per_run / args.rate
        paced_start = time.time()
        for b, start in enumerate(range(0, n, per_run)):
            time.sleep(max(0.0, paced_start + b * interval - time.time()))
            scope = profile_ids[start : start + per_run]
            r = cdp.segments.engine.record(
                segment, set(scope), trigger="realtime", started=time.perf_counter(), started_at=now_iso(), scope=scope
            )
            commits[r.run_id] = time.time()
        offered = n / (time.time() - paced_start)
        wait_for(base, 2 * n, timeout=600)
        rows, _ = received(base)
        paced = [(at - commits[run_id]) for _, at, run_id in rows if run_id in commits]
        out["paced"] = {
            "changes": len(paced),
            "runs": len(commits),
            "target_rate": args.rate,
            "offered_per_s": round(offered, 1),
            "latency_p50_s": round(pct(paced, 0.5), 3),
            "latency_p95_s": round(pct(paced, 0.95), 3),
            "latency_max_s": round(max(paced), 3) if paced else None,
            "mean_s": round(statistics.fmean(paced), 3) if paced else None,
        }
        rows, bad = received(base)
        ids = [r[0] for r in rows]
        out["received"] = len(ids)
        out["duplicates"] = len(ids) - len(set(ids))
        out["bad_signatures"] = bad
        out["expected"] = 2 * n
        failed = cdp.store.query("SELECT count(*) AS n FROM webhook_deliveries WHERE status != 'succeeded'")[0]["n"]
        out["not_succeeded"] = failed
    finally:
        cdp.close()
        receiver.terminate()
        receiver.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    out["busy_share_after"] = round(cpu_busy_share(), 2)
    out["targets"] = {
        "deliveries_per_s": TARGET_PER_S,
        "p95_s": TARGET_P95_S,
        "met": out["burst"]["deliveries_per_s"] >= TARGET_PER_S and out["paced"]["latency_p95_s"] <= TARGET_P95_S,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=10_000, help="Membership changes per phase.")
    parser.add_argument("--per-run", type=int, default=100, help="Changes per segment run in the paced phase.")
    parser.add_argument("--rate", type=float, default=500, help="Changes/s offered in the paced phase.")
    parser.add_argument("--concurrency", type=int, default=10, help="webhooks_concurrency_per_endpoint")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--serve-receiver", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver is not None:
        serve_receiver(args.serve_receiver)
        return
    out = run(args)
    if not args.json_only:
        burst, paced = out["burst"], out["paced"]
        print(
            f"machine: {out['cpus']} CPUs, load avg {out['load_avg_1m']:.2f}, "
            f"busy before/after {out['busy_share_before']:.0%}/{out['busy_share_after']:.0%} (other work)"
        )
        print(f"ingest of {out['profiles']} profiles: {out['ingest_seconds']} s")
        print(
            f"burst : {burst['changes']} changes in one run ({burst['run_ms']} ms): "
            f"{burst['deliveries_per_s']} deliveries/s; commit->receipt p50 {burst['latency_p50_s']} s, "
            f"p95 {burst['latency_p95_s']} s (queueing behind the burst)"
        )
        print(
            f"        dispatching process: {burst['cpu_ms_per_delivery']} ms CPU per delivery "
            f"({burst['deliveries_per_cpu_second']} per CPU-second); receiver: "
            f"{burst['receiver_cpu_ms_per_request']} ms CPU per request"
        )
        print(
            f"paced : {paced['changes']} changes in {paced['runs']} runs at {paced['offered_per_s']}/s offered: "
            f"commit->receipt p50 {paced['latency_p50_s']} s, p95 {paced['latency_p95_s']} s, "
            f"max {paced['latency_max_s']} s"
        )
        print(
            f"checks: {out['received']}/{out['expected']} received, {out['duplicates']} duplicates, "
            f"{out['bad_signatures']} bad signatures, {out['not_succeeded']} not succeeded"
        )
        print(f"targets (>= {TARGET_PER_S}/s, p95 <= {TARGET_P95_S} s): {'met' if out['targets']['met'] else 'MISSED'}")
    print(json.dumps(out))  # fmt: skip
    ok = out["received"] == out["expected"] and not out["duplicates"] and not out["bad_signatures"]
    sys.exit(0 if ok and not out["not_succeeded"] else 1)


if __name__ == "__main__":
    main()
