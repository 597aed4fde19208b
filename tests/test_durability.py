"""Every acknowledged write survives kill -9 of the server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cdp import CDP, Settings
from tests.conftest import free_port


def _start(db: Path, port: int) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).with_name("cdp")
    proc = subprocess.Popen(
        [str(cli), "serve", "--db", str(db), "--port", str(port), "--no-scheduler", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    with CDP(Settings(db=db)) as cdp:
        _, key = cdp.keys.create("write", "web")
    port = free_port()
    proc = _start(db, port)
    acknowledged: list[str] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(key, ""), timeout=5) as client:
            n = 0
            while not stop.is_set():
                ids = [f"w{worker}-{n}-{i}" for i in range(50)]
                batch = [
                    {"type": "track", "userId": f"u{i}", "event": "Tick", "messageId": m} for i, m in enumerate(ids)
                ]
                n += 1
                try:
                    response = client.post("/v1/batch", json={"batch": batch})
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    acknowledged.extend(ids)

    workers = [threading.Thread(target=send, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 15
    while len(acknowledged) < 3000 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for worker in workers:
        worker.join()
    assert len(acknowledged) >= 3000

    # A new process on the same file sees every acknowledged event.
    proc = _start(db, port)
    try:
        with CDP(Settings(db=db)) as cdp:
            stored = {row[0] for row in cdp.store.reader().execute("SELECT message_id FROM events")}
            assert cdp.store.reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
