"""The ingest writer process stores exactly what the in-process writer thread stores, and survives
the loss of its child."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cdp import CDP, Settings
from cdp.errors import WriterUnavailable
from cdp.ingest.writer import ProcessWriter


def _settings(path: Path, writer: str) -> Settings:
    return Settings(db=path, scheduler_enabled=False, key_cache_seconds=0, ingest_writer=writer)  # type: ignore[arg-type]


def _traffic() -> list[dict[str, Any]]:
    """Anonymous visits that identify later, a repeated messageId, an alias, a group, bad values."""
    batches: list[dict[str, Any]] = []
    for n in range(6):
        batch = []
        for user in range(20):
            anon = f"anon-{user}-{n % 2}"
            batch.append({"type": "page", "anonymousId": anon, "name": "Home", "messageId": f"p-{n}-{user}"})
            batch.append(
                {
                    "type": "track",
                    "anonymousId": anon,
                    "event": "Product Viewed",
                    "properties": {"revenue": "12.5" if user % 3 else -4},
                    "messageId": f"t-{n}-{user}",
                }
            )
            if n == 3:
                batch.append(
                    {
                        "type": "identify",
                        "anonymousId": anon,
                        "userId": f"user-{user}",
                        "traits": {"email": f" User{user}@Example.COM ", "first_name": "Ann", "phone": "bad"},
                        "messageId": f"i-{user}",
                    }
                )
        batch.append({"type": "group", "userId": "user-1", "groupId": "acme", "messageId": f"g-{n}"})
        batch.append({"type": "track", "userId": "user-2", "event": "Again", "messageId": "p-0-0"})  # duplicate
        batches.append({"batch": batch})
    batches.append({"batch": [{"type": "alias", "previousId": "anon-5-0", "userId": "user-7", "messageId": "a-1"}]})
    return batches


def _snapshot(cdp: CDP) -> dict[str, Any]:
    """What was stored, with generated profile ids replaced by the message ids that reached them."""
    conn = cdp.store.reader()
    profile_of = {m: p for m, p in conn.execute("SELECT message_id, profile_id FROM events")}
    label: dict[str, str] = {}
    for message_id in sorted(profile_of):
        profile = profile_of[message_id]
        label.setdefault(profile, message_id)
    columns = "message_id, type, event, user_id, anonymous_id, group_id, properties, traits, quality_flags"
    return {
        "events": [
            (*row, label[profile_of[row[0]]])
            for row in conn.execute(f"SELECT {columns} FROM events ORDER BY message_id").fetchall()
        ],
        "identifiers": sorted(
            (kind, value, label.get(profile, "?"))
            for kind, value, profile in conn.execute("SELECT type, value, profile_id FROM identifiers")
        ),
        "groups": sorted(
            (label.get(p, "?"), g) for p, g in conn.execute("SELECT profile_id, group_id FROM profile_groups")
        ),
        "quality": sorted(
            conn.execute(
                "SELECT kind, source, name, metric, value FROM quality_counters WHERE metric != 'max_skew_seconds'"
            )
        ),
        "live_profiles": conn.execute("SELECT count(*) FROM profiles WHERE merged_into IS NULL").fetchone()[0],
    }


def _ingest(cdp: CDP, key: str) -> list[tuple[int, int]]:
    results = []
    for body in _traffic():
        result = cdp.ingest.batch(body, write_key=key)
        results.append((result.stored, result.duplicates))
    return results


def test_process_writer_stores_what_the_thread_stores(tmp_path: Path) -> None:
    snapshots, results = [], []
    for writer in ("thread", "process"):
        with CDP(_settings(tmp_path / f"{writer}.db", writer)) as cdp:
            assert (writer == "process") == isinstance(cdp.ingest.tracking.writer, ProcessWriter)
            _, key = cdp.keys.create("write", "web")
            results.append(_ingest(cdp, key))
            snapshots.append(_snapshot(cdp))
    assert results[0] == results[1]
    assert sum(d for _, d in results[1]) == 6  # the repeated messageId, once a batch
    thread, process = snapshots
    assert process == thread
    assert len(process["events"]) == 6 * 40 + 20 + 6 + 1  # every distinct messageId once
    assert process["live_profiles"] < 40  # identify joined the anonymous visits


def test_hooks_see_committed_rows_in_both_modes(tmp_path: Path) -> None:
    for writer in ("thread", "process"):
        with CDP(_settings(tmp_path / f"{writer}.db", writer)) as cdp:
            _, key = cdp.keys.create("write", "web")
            seen: list[tuple[Any, ...]] = []

            def hook(rows: list[tuple[Any, ...]], cdp: CDP = cdp, seen: list[tuple[Any, ...]] = seen) -> None:
                # called after COMMIT: another connection already sees the rows
                ids = [r[0] for r in rows]
                marks = ",".join("?" * len(ids))
                found = cdp.store.reader().execute(f"SELECT count(*) FROM events WHERE message_id IN ({marks})", ids)
                assert found.fetchone()[0] == len(ids)
                seen.extend(rows)

            cdp.ingest.tracking.events_stored.connect(hook)
            cdp.ingest.batch(
                {"batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": "m1"}]}, write_key=key
            )
            cdp.ingest.batch(
                {"batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": "m1"}]}, write_key=key
            )
            assert [r[0] for r in seen] == ["m1"]  # the duplicate is not handed on
            stored = cdp.store.reader().execute("SELECT profile_id FROM events").fetchone()[0]
            assert seen[0][-1] == stored and stored.startswith("prof_")


def _child_pids() -> set[int]:
    """Live writer processes started by this one (not zombies, not multiprocessing's resource tracker)."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as children:
                pids = children.read().split()
        except OSError:  # the thread ended since the listing
            continue
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if state != "Z" and b"cdp.ingest.writer" in cmdline:
                found.add(int(pid))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="lists the writer's child processes through Linux's /proc")
def test_a_lost_writer_process_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    before = _child_pids()
    with CDP(_settings(tmp_path / "cdp.db", "process")) as cdp:
        _, key = cdp.keys.create("write", "web")
        cdp.ingest.batch({"batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": "m1"}]}, write_key=key)
        children = _child_pids() - before
        assert len(children) == 1
        os.kill(children.pop(), signal.SIGKILL)
        body = {"batch": [{"type": "track", "userId": "u1", "event": "B", "messageId": "m2"}]}
        attempts = 0
        while True:  # what an SDK does: retry on 503
            attempts += 1
            try:
                result = cdp.ingest.batch(body, write_key=key)
                break
            except WriterUnavailable as exc:
                assert exc.status == 503
                assert attempts < 3
                time.sleep(0.05)
        assert result.stored == 1
        again = cdp.ingest.batch(body, write_key=key)
        assert (again.stored, again.duplicates) == (0, 1)
        rows = cdp.store.reader().execute("SELECT message_id FROM events ORDER BY message_id").fetchall()
        assert rows == [("m1",), ("m2",)]
        assert len(_child_pids() - before) == 1  # a new child replaced the killed one
    # close() stopped the child
    deadline = time.monotonic() + 10
    while _child_pids() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (_child_pids() - before)


def _prepared(cdp: CDP, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    return [cdp.ingest.tracking.prepare_batch(body, write_key=key).work for body in bodies]


def test_batches_stored_together_answer_as_if_stored_in_turn(tmp_path: Path) -> None:
    from cdp.ingest.tracking import store_batch, store_batches

    bodies = _traffic()[:4]
    bodies[2]["batch"].append({"type": "track", "userId": "u9", "event": "Late", "messageId": "p-1-3"})  # in batch 1
    answers = []
    for together in (False, True):
        with CDP(_settings(tmp_path / f"{together}.db", "thread")) as cdp:
            _, key = cdp.keys.create("write", "web")
            batches = _prepared(cdp, key, bodies)
            graph = cdp.ingest.tracking.identity
            if together:
                stored = cdp.store.write(lambda conn, b=batches, g=graph: store_batches(conn, g, b))
            else:
                stored = [cdp.store.write(lambda conn, b=b, g=graph: store_batch(conn, g, b)) for b in batches]
            counts = [(s, d, fresh) for s, d, fresh, _ in stored]
            answers.append((counts, _snapshot(cdp)))
    assert answers[0] == answers[1]
    assert answers[1][0][2][1] == 2  # the third request repeats p-0-0 (as every batch does) and p-1-3


def test_a_broken_batch_fails_alone_when_stored_with_others(tmp_path: Path) -> None:
    with CDP(_settings(tmp_path / "cdp.db", "process")) as cdp:
        _, key = cdp.keys.create("write", "web")
        good, other = _prepared(
            cdp,
            key,
            [
                {"batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": "m1"}]},
                {"batch": [{"type": "track", "userId": "u2", "event": "B", "messageId": "m2"}]},
            ],
        )
        rows, observations, names, tally = other
        broken = ([rows[0][:5]], observations, names, tally)  # a row that SQLite cannot bind
        writer = cdp.ingest.tracking.writer
        assert isinstance(writer, ProcessWriter)
        writer.start()
        futures = [writer.submit(b) for b in (broken, good, broken, good)]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30)[:2])
            except WriterUnavailable as exc:
                assert "nothing was stored" in exc.message
                outcomes.append("failed")
        assert outcomes == ["failed", (1, 0), "failed", (0, 1)]
        stored = cdp.store.reader().execute("SELECT message_id FROM events").fetchall()
        assert stored == [("m1",)]


def test_an_in_memory_store_keeps_the_writer_thread() -> None:
    with CDP(Settings(db=Path(":memory:"), scheduler_enabled=False, ingest_writer="process")) as cdp:
        assert not isinstance(cdp.ingest.tracking.writer, ProcessWriter)


def _track(cdp: CDP, key: str, **ids: str) -> str:
    cdp.ingest.batch({"batch": [{"type": "track", "event": "Seen", **ids}]}, write_key=key)
    conn = cdp.store.reader()
    return str(conn.execute("SELECT profile_id FROM events ORDER BY id DESC LIMIT 1").fetchone()[0])


def test_a_writer_keeps_its_identity_cache_until_another_process_changes_the_graph(tmp_path: Path) -> None:
    """Two writers on one file, as the server and its ingest writer process are."""
    path = tmp_path / "cdp.db"
    with CDP(_settings(path, "thread")) as ingest, CDP(_settings(path, "thread")) as other:
        _, key = ingest.keys.create("write", "web")
        older = _track(ingest, key, anonymousId="anon-1")
        newer = _track(ingest, key, userId="user-1")
        assert older != newer
        cached = dict(ingest.graph.cache.ids)
        assert ("user_id", "user-1") in cached

        other.keys.create("read", "unrelated")  # a write that does not touch the identity graph
        assert _track(ingest, key, userId="user-1") == newer
        assert ingest.graph.cache.ids.keys() >= cached.keys()  # still warm

        # The other writer joins the two: the older profile survives.
        other.ingest.batch(
            {"batch": [{"type": "identify", "anonymousId": "anon-1", "userId": "user-1", "traits": {}}]},
            write_key=key,
        )
        assert _track(ingest, key, userId="user-1") == older  # not the merged-away profile
        assert _track(ingest, key, anonymousId="anon-1") == older
