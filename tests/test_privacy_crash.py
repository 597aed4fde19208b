"""A kill -9 in the middle of a large erasure: the request resumes and ends exactly as an uninterrupted one."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import orjson

from cdp import CDP, Settings

EVENTS = 100_000


def _build(db: Path) -> None:
    """A person with 100k events (one ingested, the rest copies of it with their own message ids) and a
    neighbour whose data must stay."""
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        key = cdp.keys.create("write", "web")[1]
        cdp.ingest.batch({"batch": [
            {"type": "identify", "userId": "big", "traits": {"email": "big@example.com", "lastName": "Bigsby"}},
            {"type": "track", "userId": "big", "event": "Viewed", "properties": {"n": 0}},
            {"type": "identify", "userId": "neighbour", "traits": {"email": "n@example.com"}},
            {"type": "track", "userId": "neighbour", "event": "Viewed"},
        ]}, write_key=key)  # fmt: skip
        cdp.ingest.upsert_records([{"source": "crm", "external_id": "b1", "email": "big@example.com"}])

        def copies(conn: sqlite3.Connection) -> None:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " INSERT INTO events (message_id, type, event, user_id, profile_id, timestamp, received_at,"
                " properties, context, source, write_key_id)"
                " SELECT 'copy-' || i, type, event, user_id, profile_id, timestamp, received_at,"
                " json_set(properties, '$.n', i), context, source, write_key_id FROM events, n"
                " WHERE events.user_id = 'big' AND events.type = 'track'",
                (EVENTS - 1,),
            )

        cdp.store.write(copies)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _state(db: Path) -> dict[str, object]:
    """What is left, in a form two stores can be compared by (no random ids or times)."""
    conn = sqlite3.connect(db)
    try:
        return {
            "events": conn.execute("SELECT message_id, user_id FROM events ORDER BY message_id").fetchall(),
            "identifiers": conn.execute("SELECT type, value FROM identifiers ORDER BY type, value").fetchall(),
            "records": conn.execute("SELECT source, external_id FROM source_records ORDER BY 1, 2").fetchall(),
            "profiles": conn.execute("SELECT count(*) FROM profiles").fetchone(),
            "deleted_messages": conn.execute("SELECT count(*) FROM outbox WHERE type = 'profile.deleted'").fetchone(),
            "requests": [
                (status, {k: v for k, v in orjson.loads(counts).items() if k != "wal_truncated"}, work)
                for status, counts, work in conn.execute("SELECT status, counts, work FROM privacy_requests")
            ],
        }
    finally:
        conn.close()


def test_kill_9_mid_deletion_resumes_to_the_same_result(tmp_path: Path) -> None:
    db, reference = tmp_path / "cdp.db", tmp_path / "reference.db"
    _build(db)
    shutil.copy(db, reference)
    with CDP(Settings(db=reference, scheduler_enabled=False)) as cdp:
        done = cdp.privacy.submit("delete", [{"type": "user_id", "value": "big"}], background=False)
    assert done["status"] == "done" and done["counts"]["events"] == EVENTS + 1  # and the identify

    cdp_bin = str(Path(sys.executable).parent / "cdp")
    # The smallest chunk (100 events a transaction: a thousand of them) with a pause after each: however fast or
    # busy the machine, the deletion is still running when the watcher sees its third chunk.
    env = {**os.environ, "CDP_PRIVACY_EVENTS_CHUNK": "100", "CDP_PRIVACY_CHUNK_PAUSE_SECONDS": "0.5"}
    errors = (tmp_path / "delete.err").open("wb")  # what the command said, for a failure's message
    process = subprocess.Popen([cdp_bin, "privacy", "delete", "--db", str(db), "--user-id", "big"], env=env,
                               stdout=subprocess.DEVNULL, stderr=errors)  # fmt: skip
    said = lambda: (tmp_path / "delete.err").read_text(errors="replace")[-2000:]  # noqa: E731
    # A short busy timeout: the deletion's WAL checkpoints may hold readers back for a moment, and a watcher
    # waiting through them could see the deletion only once it has ended.
    watcher = sqlite3.connect(db, timeout=0.01)
    deadline = time.monotonic() + 240  # a very busy machine starts the command slowly
    try:
        while True:
            try:
                # fetchall ends the statement, and with it the read snapshot: a snapshot left open between
                # polls would hold the deletion's WAL checkpoints (and so the deletion) back
                rows = watcher.execute("SELECT status, counts FROM privacy_requests").fetchall()
                row = rows[0] if rows else None
            except sqlite3.OperationalError:  # busy for a moment: look again
                assert process.poll() is None, f"the deletion ended before it could be interrupted: {said()}"
                assert time.monotonic() < deadline, said()
                continue
            removed = orjson.loads(row[1]).get("events", 0) if row else 0
            if row and row[0] == "running" and removed >= 3 * 100:
                break
            assert process.poll() is None, f"the deletion ended before it could be interrupted: {said()}"
            assert time.monotonic() < deadline, f"no progress: {row}, {said()}"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        watcher.execute("PRAGMA busy_timeout = 30000")
        rid, status, counts, step = watcher.execute("SELECT id, status, counts, step FROM privacy_requests").fetchone()
        left = watcher.execute("SELECT count(*) FROM events WHERE user_id = 'big'").fetchone()[0]
    finally:
        watcher.close()
        if process.poll() is None:  # the test failed before the kill: leave no process behind
            process.kill()
            process.wait(timeout=30)
        errors.close()
    assert status == "running" and step == "events"
    assert 0 < left < EVENTS and orjson.loads(counts)["events"] == EVENTS + 1 - left  # counted with the deletes

    # Meanwhile the person came back: a new device linked to them and an event (a plain delete does not suppress)
    with CDP(Settings(db=db, scheduler_enabled=False, ingest_writer="thread")) as cdp:
        key = cdp.keys.create("write", "late")[1]
        cdp.ingest.batch({"batch": [{"type": "identify", "userId": "big", "anonymousId": "late-device"},
                                    {"type": "track", "anonymousId": "late-device", "event": "Late"}]},
                         write_key=key)  # fmt: skip

    # The same request sent again (a retry) is the open one, resumed to its end; nothing is left to resume after.
    retried = subprocess.run([cdp_bin, "privacy", "delete", "--db", str(db), "--user-id", "big"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    answer = orjson.loads(retried.stdout)
    assert (answer["id"], answer["status"]) == (rid, "done")
    resumed = subprocess.run([cdp_bin, "privacy", "resume", "--db", str(db)], capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert orjson.loads(resumed.stdout) == []
    after, expected = _state(db), _state(reference)
    requests = after.pop("requests")
    assert isinstance(requests, list) and requests[0][1]["events"] == EVENTS + 3  # the late ones too
    expected.pop("requests")
    assert after == expected
    events = after["events"]
    assert isinstance(events, list) and [u for _, u in events] == ["neighbour", "neighbour"]
