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


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(c) for c in children.read().split() if b"cdp.ingest.writer" in _cmdline(int(c))]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


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
    writers = _children(proc.pid)
    assert writers, "cdp serve runs its ingest writer process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The orphaned writer commits what it had, sees the pipe close and exits.
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in writers)
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
