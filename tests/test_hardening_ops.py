"""Operations under failure: the store at rest, stores that cannot be written, clean stops, backup and restore."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx

from cdp import CDP, Settings
from cdp.store import Store
from tests.conftest import free_port

CLI = str(Path(sys.executable).with_name("cdp"))
# Root ignores file modes; the permission tests run the CLI without the capabilities that let it (as a user).
LIMITED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


def cdp(*args: str, limited: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    prefix = LIMITED if limited else []
    return subprocess.run([*prefix, CLI, *args], capture_output=True, text=True, check=False, timeout=timeout)


def serve(db: Path, port: int, *, limited: bool = False, log: Path | None = None) -> subprocess.Popen[bytes]:
    prefix = LIMITED if limited else []
    with open(log or os.devnull, "wb") as err:
        proc = subprocess.Popen(
            [*prefix, CLI, "serve", "--db", str(db), "--port", str(port), "--no-scheduler", "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 503):
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def writer_children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in children.read().split():
                try:
                    if b"cdp.ingest.writer" in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
                except OSError:
                    continue
    return found


# -- the store at rest -------------------------------------------------------------------------------


def test_a_store_made_by_the_cli_is_complete_in_its_database_file(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    assert cdp("migrate", "--db", str(db)).returncode == 0
    made = cdp("keys", "create", "--kind", "write", "--db", str(db))
    assert made.returncode == 0, made.stderr
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)  # what people do to back up SQLite: the file alone
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_wal_is_truncated_while_readers_never_pause(tmp_path: Path) -> None:
    store = Store(Settings(db=tmp_path / "w.db"))
    store.TRUNCATE_BYTES = 512 * 1024  # type: ignore[misc]  # small numbers, same policy
    store.write(lambda conn: conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)"))
    stop = threading.Event()

    def read() -> None:  # a reader always inside some query, as under load
        conn = sqlite3.connect(tmp_path / "w.db")
        while not stop.is_set():
            conn.execute("SELECT count(*), sum(length(data)) FROM t").fetchone()
        conn.close()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    peak = 0
    try:
        deadline = time.monotonic() + 20
        for i in range(400):
            store.write(lambda conn, i=i: conn.execute("INSERT INTO t VALUES (?, randomblob(20000))", (i,)))
            peak = max(peak, store.wal_bytes())
            if i % 50 == 0:
                time.sleep(store.CHECKPOINT_SECONDS * 1.2)  # let the checkpointer see the size
            assert time.monotonic() < deadline
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    # 8 MB went through the log; it was cut back to zero on the way, never kept growing.
    assert peak < 6 * 1024 * 1024, peak
    store.close()
    assert store.wal_bytes() == 0


def test_journal_size_limit_is_set_on_every_connection(tmp_path: Path) -> None:
    store = Store(Settings(db=tmp_path / "j.db"))
    try:
        assert store.reader().execute("PRAGMA journal_size_limit").fetchone()[0] == Store.JOURNAL_LIMIT
    finally:
        store.close()


# -- stores that cannot be used ----------------------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_missing_directory_is_an_error_unless_asked_to_create_it(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "cdp.db"
    for args in (["migrate"], ["keys", "create", "--kind", "write"], ["resolve"], ["events", "tail"]):
        line = one_line(cdp(*args, "--db", str(db)))
        assert "does not exist" in line and "--create" in line
    assert not db.parent.exists()
    assert cdp("migrate", "--create", "--db", str(db)).returncode == 0
    assert db.exists()


def test_an_unwritable_directory_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "cdp.db"
    folder.chmod(0o555)
    try:
        for args in (["migrate"], ["keys", "create", "--kind", "write"], ["serve", "--port", str(free_port())]):
            line = one_line(cdp(*args, "--db", str(db), limited=True, timeout=60))
            assert "not writable" in line
    finally:
        folder.chmod(0o755)


def test_a_read_only_store_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    assert cdp("migrate", "--db", str(db)).returncode == 0
    db.chmod(0o444)
    for args in (["keys", "create", "--kind", "write"], ["resolve"], ["events", "tail"], ["serve"]):
        extra = ["--port", str(free_port())] if args == ["serve"] else []
        line = one_line(cdp(*args, *extra, "--db", str(db), limited=True, timeout=60))
        assert "read-only" in line


def test_healthz_reports_a_store_that_became_read_only_while_serving(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    assert cdp("migrate", "--db", str(db)).returncode == 0
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(db, port, limited=True, log=log)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["store"] == "writable"
        db.chmod(0o444)
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "degraded" and "read-only" in answer.json()["store"]
        db.chmod(0o644)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert "cannot write its store" in log.read_text()


# -- clean stop --------------------------------------------------------------------------------------


def test_sigterm_returns_after_the_writer_child_and_sqlite_reads_at_once(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    with CDP(Settings(db=db)) as lib:
        write_key = lib.keys.create("write", "w")[1]
    port = free_port()
    proc = serve(db, port)
    children = writer_children(proc.pid)
    assert children, "the server runs an ingest writer process"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(write_key, "")) as client:
        batch = [{"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"m{i}"} for i in range(500)]
        assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    for child in children:  # gone (not even a zombie: it was reaped) when the server returned
        assert (
            not Path(f"/proc/{child}").exists()
            or b"cdp.ingest.writer" not in Path(f"/proc/{child}/cmdline").read_bytes()
        )
    conn = sqlite3.connect(db, timeout=0)  # no waiting: nothing may hold a lock now
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 500
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


# -- backup and restore ------------------------------------------------------------------------------


def ingest_until(port: int, write_key: str, stop: threading.Event, acked: list[str]) -> Callable[[], None]:
    def run() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(write_key, ""), timeout=30) as client:
            while not stop.is_set():
                ids = [uuid.uuid4().hex for _ in range(100)]
                batch = [
                    {"type": "track", "userId": f"u{i % 50}", "event": "E", "messageId": m} for i, m in enumerate(ids)
                ]
                if client.post("/v1/batch", json={"batch": batch}).status_code == 200:
                    acked.extend(ids)

    return run


def stored_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {row[0] for row in conn.execute("SELECT message_id FROM events")}


def test_backup_under_load_holds_every_event_acknowledged_before_it(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    with CDP(Settings(db=db)) as lib:
        write_key = lib.keys.create("write", "w")[1]
    port = free_port()
    proc = serve(db, port)
    stop = threading.Event()
    acked: list[str] = []
    threads = [threading.Thread(target=ingest_until(port, write_key, stop, acked)) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        before = list(acked)
        result = cdp("backup", str(tmp_path / "b1.db"), "--db", str(db))
        assert result.returncode == 0, result.stderr
        assert "integrity check ok" in result.stdout
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert len(before) >= 100
    backed_up = stored_ids(tmp_path / "b1.db")
    assert set(before) <= backed_up
    assert set(acked) <= stored_ids(db)  # and the store itself lost nothing
    assert not Path(f"{tmp_path / 'b1.db'}-wal").exists()

    # restore: refuses to replace a store without --force, then replaces it and the CLI sees the backup's data
    refused = cdp("restore", str(tmp_path / "b1.db"), "--db", str(db))
    assert refused.returncode == 1 and "--force" in refused.stderr
    restored = cdp("restore", str(tmp_path / "b1.db"), "--db", str(db), "--force")
    assert restored.returncode == 0, restored.stderr
    assert stored_ids(db) == backed_up


def test_kill_9_during_backup_leaves_no_partial_file_and_the_store_intact(tmp_path: Path) -> None:
    db = tmp_path / "cdp.db"
    with CDP(Settings(db=db)) as lib:
        write_key = lib.keys.create("write", "w")[1]
        for n in range(20):
            batch = [
                {"type": "track", "userId": f"u{i}", "event": "E", "properties": {"pad": "x" * 2000}}
                for i in range(500)
            ]
            lib.ingest.batch({"batch": batch}, write_key=write_key)
            del n
    before = stored_ids(db)
    dest = tmp_path / "b.db"
    for delay in (0.3, 0.6, 1.0, 1.5):
        proc = subprocess.Popen([CLI, "backup", str(dest), "--db", str(db), "--force"])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if dest.exists():  # finished before the kill: then it is complete
            assert stored_ids(dest) == before
            dest.unlink()
        assert stored_ids(db) == before
    # a backup after the kills works (stale partial files are not in the way)
    assert cdp("backup", str(dest), "--db", str(db)).returncode == 0
    assert stored_ids(dest) == before
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []  # the killed ones' leftovers removed
