"""Privacy requests end to end: erasure of a resolved person from every table and from the file's bytes,
suppression at the door, exports with expiry, the HTTP API and the CLI."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdp import CDP, Settings, sample
from tests.conftest import LiveServer, count
from tests.test_webhooks import Receiver, receiver  # noqa: F401  (the fixture)

BUYERS = {"key": "buyers", "name": "Likely buyers", "type": "propensity",
          "model": {"target_event": "Renewal Done", "horizon_days": 7, "algorithm": "logistic"},
          "select": {"top_quantile": 0.25}}  # fmt: skip


def _plant_signal(cdp: CDP) -> None:
    """Half the visitors (by a hash of their anonymous id) renew every other day for 120 days, the rest never:
    a signal the propensity model finds whatever the clock says, so every profile gets a score (a model that
    beats no controls writes none, and the sample data alone is a close call)."""
    info, secret = cdp.keys.create("write", name="signal")
    anonymous = [r["value"] for r in cdp.store.query("SELECT value FROM identifiers WHERE type = 'anonymous_id'")]
    renewers = sorted(a for a in anonymous if hashlib.sha256(a.encode()).digest()[0] % 2 == 0)
    now = datetime.now(UTC)
    batch = [{"type": "track", "event": "Renewal Done", "anonymousId": a, "messageId": f"signal-{a}-{day}",
              "timestamp": (now - timedelta(days=day, hours=1)).isoformat()}
             for a in renewers for day in range(1, 121, 2)]  # fmt: skip
    for start in range(0, len(batch), 500):
        cdp.ingest.batch({"batch": batch[start : start + 500]}, write_key=secret)
    cdp.keys.revoke(info.id)


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed sample data, loaded and resolved once (fuzzy merges included); tests copy the file."""
    path = tmp_path_factory.mktemp("sample") / "cdp.db"
    with CDP(Settings(db=path, scheduler_enabled=False, key_cache_seconds=0)) as cdp:
        sample.load(cdp, None, shift_to_now=True)
        _plant_signal(cdp)
        cdp.identity.run()
        cdp.segments.create(BUYERS)
        run = cdp.segments.compute("buyers")  # a propensity score for every profile
        assert run.status == "succeeded", run
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def loaded(sample_store: Path, tmp_path: Path) -> Iterator[CDP]:
    path = tmp_path / "cdp.db"
    shutil.copy(sample_store, path)
    settings = Settings(db=path, scheduler_enabled=False, key_cache_seconds=0, webhooks_allow_private_urls=True,
                        webhooks_poll_seconds=0.05)  # fmt: skip
    with CDP(settings) as cdp:
        yield cdp


def _person(cdp: CDP) -> str:
    """A person with events, two CRM records, a fuzzy (resolution) merge and a last name nobody else has."""
    rows = cdp.store.query(
        """
        SELECT p.id FROM profiles p
        WHERE p.merged_into IS NULL
          AND (SELECT count(*) FROM source_records s WHERE s.profile_id = p.id) >= 2
          AND (SELECT count(*) FROM events e WHERE e.profile_id = p.id) >= 5
          AND EXISTS (SELECT 1 FROM merges m WHERE m.profile_id = p.id AND m.reason = 'resolution')
          AND (SELECT count(DISTINCT s.last_name) FROM source_records s WHERE s.profile_id = p.id) = 1
          AND NOT EXISTS (SELECT 1 FROM source_records o WHERE o.profile_id != p.id AND o.last_name IN
                          (SELECT last_name FROM source_records s WHERE s.profile_id = p.id))
          AND (SELECT count(DISTINCT s.email) FROM source_records s WHERE s.profile_id = p.id) >= 1
        ORDER BY p.id LIMIT 1
        """
    )
    assert rows, "the sample data holds no person with two records, events and a fuzzy merge"
    return str(rows[0]["id"])


def _values(cdp: CDP, pid: str) -> set[str]:
    """Every identifying value stored for the profile: identifiers, record ids, emails, phones, names."""
    conn = cdp.store.reader()
    ids = [pid, *[r[0] for r in conn.execute("SELECT id FROM profiles WHERE merged_into = ?", (pid,))]]
    marks = ",".join("?" * len(ids))
    values = {
        v for (v,) in conn.execute(f"SELECT value FROM identifiers WHERE profile_id IN ({marks})", ids)
    }  # fmt: skip
    for row in conn.execute(
        f"SELECT external_id, email, phone, last_name FROM source_records WHERE profile_id IN ({marks})", ids
    ):
        values.update(v for v in row if v)
    # record identifiers are "source:external_id"; the external id alone is what a scan must not find
    values.update(v.split(":", 1)[1] for v in list(values) if v.startswith(("salesforce:", "hubspot:")))
    return {v for v in values if len(v) >= 6}


def _text_hits(cdp: CDP, values: set[str]) -> dict[str, list[str]]:
    """Every table's every column (text, numbers, blobs), scanned for the values: a table added later is scanned
    too."""
    conn = cdp.store.reader()
    hits: dict[str, list[str]] = {}
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        for column in columns:
            for (value,) in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"):
                data = value if isinstance(value, bytes) else str(value).encode()  # blobs (pickles) too
                found = [v for v in values if v.encode() in data]
                if found:
                    hits.setdefault(f"{table}.{column}", []).extend(found)
    return hits


def _file_hits(path: Path, values: set[str]) -> list[str]:
    data = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    return sorted(v for v in values if v.encode() in data)


def _export(cdp: CDP, pid: str) -> dict[str, Any]:
    import orjson

    result = cdp.privacy.submit("export", profile_id=pid, background=False)
    assert result["status"] == "done", result
    doc: dict[str, Any] = orjson.loads(cdp.privacy.download(result["id"]).read_bytes())
    for key in ("request_id", "generated_at"):
        doc.pop(key)
    return doc


def _wait(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_erasure_is_complete(loaded: CDP, receiver: Receiver) -> None:  # noqa: F811
    cdp = loaded
    pid = _person(cdp)
    hook = cdp.webhooks.create(receiver.url, None, None, "privacy test", True)
    receiver.secrets.append(hook["secret"])
    cdp.segments.create({"key": "emailable", "name": "Has an email", "rule": {"trait": "email", "op": "exists"}})
    cdp.segments.compute("emailable")
    assert pid in {m["profile_id"] for m in cdp.segments.members("emailable", limit=1000).data}
    assert "propensity_buyers" in cdp.profiles.get(pid)["computed"]
    cdp.webhooks.start()
    person_msgs = {r["message_id"] for r in cdp.store.query(
        "SELECT message_id FROM outbox WHERE profile_id = ? AND segment_key = 'emailable'", (pid,))}  # fmt: skip
    assert person_msgs
    _wait(lambda: person_msgs <= {r.id for r in receiver.ok()})
    _wait(lambda: count(cdp, "webhook_deliveries", "status = 'pending'") == 0)
    others = [r["id"] for r in cdp.store.query(
        "SELECT id FROM profiles WHERE merged_into IS NULL AND id != ? AND id IN"
        " (SELECT profile_id FROM source_records) ORDER BY id LIMIT 2", (pid,))]  # fmt: skip
    before = {o: _export(cdp, o) for o in others}

    values = _values(cdp, pid)
    email = cdp.store.query("SELECT email FROM source_records WHERE profile_id = ? AND email IS NOT NULL", (pid,))[0]
    assert _text_hits(cdp, values) and _file_hits(cdp.store.path, values)  # the scan finds them while stored

    result = cdp.privacy.submit("delete", [{"type": "email", "value": email["email"].upper()}], background=False)
    assert result["status"] == "done", result
    assert result["found"]["profiles"] == 1 and result["found"]["merged_profiles"] >= 1
    assert "other identifier" in result["found"]["note"]
    counts = result["counts"]
    for kind in ("events", "source_records", "identifiers", "profiles", "merges", "memberships", "outbox",
                 "webhook_deliveries", "webhook_attempts", "match_edges", "identity_links"):  # fmt: skip
        assert counts.get(kind, 0) > 0, kind
    assert counts["source_records"] >= 2 and counts["wal_truncated"] == 1

    assert _text_hits(cdp, values) == {}
    assert _file_hits(cdp.store.path, values) == []
    # the audit keeps the request, hashes and counts, never the values
    stored = cdp.store.query("SELECT subject, work, requested_by FROM privacy_requests WHERE id = ?", (result["id"],))
    assert stored[0]["work"] is None and email["email"] not in stored[0]["subject"]

    deleted = _wait(lambda: [r for r in receiver.ok() if r.payload["type"] == "profile.deleted"])
    assert deleted[0].payload["data"]["profile"]["id"] == pid and deleted[0].verified_by == [0]
    assert {o: _export(cdp, o) for o in others} == before
    with pytest.raises(Exception, match="no profile"):
        cdp.profiles.lookup_id(email=email["email"])
    # deleting again finds nothing and changes nothing
    again = cdp.privacy.submit("delete", [{"type": "email", "value": email["email"]}], background=False)
    assert again["status"] == "done" and again["found"]["profiles"] == 0 and not again["counts"].get("events")


@pytest.mark.parametrize("ingest_writer", ["thread", "process"])
def test_suppression_at_the_door(fresh_db: CDP, write_key: str) -> None:
    cdp = fresh_db
    cdp.start_writer()
    send = lambda msgs: cdp.ingest.batch({"batch": msgs}, write_key=write_key)  # noqa: E731
    send([{"type": "identify", "userId": "sup1", "traits": {"email": "Gone@Example.com"}}])
    result = cdp.privacy.submit("suppress_with_delete", [{"type": "email", "value": "gone@example.com"}],
                                background=False)  # fmt: skip
    assert result["status"] == "done" and result["counts"]["suppressed_identifiers"] >= 2
    assert count(cdp, "events") == 0 and count(cdp, "identifiers") == 0

    send([
        {"type": "track", "userId": "sup1", "event": "Back"},  # suppressed by user id (held by the profile)
        {"type": "identify", "anonymousId": "new-device", "traits": {"email": "gone@example.com"}},
        {"type": "track", "userId": "someone-else", "event": "Kept"},
    ])  # fmt: skip
    assert [r["user_id"] for r in cdp.store.query("SELECT user_id FROM events")] == ["someone-else"]
    assert count(cdp, "identifiers", "value IN ('new-device', 'gone@example.com', 'sup1')") == 0
    records = cdp.ingest.upsert_records(
        [
            {"source": "crm", "external_id": "c1", "email": "GONE@example.com"},
            {"source": "crm", "external_id": "c2", "email": "kept@example.com"},
        ]
    )
    assert records.inserted == 1 and count(cdp, "source_records") == 1
    report = cdp.quality.report()
    suppressed = sum(e["suppressed"] for e in report["events"])
    assert suppressed == 2

    with CDP(cdp.settings) as again:  # suppression survives a restart (a new process, a new writer)
        again.start_writer()
        again.ingest.batch({"batch": [{"type": "track", "userId": "sup1", "event": "After restart"}]},
                           write_key=write_key)  # fmt: skip
    assert count(cdp, "events", "event = 'After restart'") == 0

    cdp.privacy.submit("unsuppress", [{"type": "email", "value": "gone@example.com"}], background=False)
    send([{"type": "track", "userId": "sup1", "event": "Welcome back"}])
    assert count(cdp, "events", "user_id = 'sup1'") == 1  # new data comes in; the deleted data does not come back
    assert count(cdp, "events", "event = 'Back'") == 0


def test_api_requests_and_export_download(tmp_path: Path, write_key: str, fresh_db: CDP) -> None:
    del fresh_db
    settings = Settings(db=tmp_path / "api.db", scheduler_enabled=False, key_cache_seconds=0,
                        privacy_export_ttl_hours=0.0005)  # fmt: skip
    with CDP(settings) as cdp:
        key = cdp.keys.create("write", "web")[1]
        admin = cdp.keys.create("admin", "dpo")
        read = cdp.keys.create("read", "viewer")[1]
        cdp.ingest.batch({"batch": [
            {"type": "identify", "userId": "ex1", "traits": {"email": "ex@example.com", "firstName": "Exa"},
             "context": {"consent": {"categoryPreferences": {"marketing": True}}}},
            {"type": "track", "userId": "ex1", "event": "Order Completed", "properties": {"revenue": 12}},
        ]}, write_key=key)  # fmt: skip
        cdp.ingest.upsert_records([{"source": "crm", "external_id": "x9", "email": "ex@example.com"}])
        import threading

        import uvicorn

        from api import create_app
        from tests.conftest import free_port

        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(create_app(cdp=cdp, scheduler=False), host="127.0.0.1", port=port,
                                            log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        _wait(lambda: srv.started)
        try:
            live = LiveServer(f"http://127.0.0.1:{port}", cdp)
            auth = {"Authorization": f"Bearer {admin[1]}"}
            with live.client() as http:
                bad = http.post("/v1/privacy/requests", json={"type": "erase", "profile_id": "x"}, headers=auth)
                assert bad.status_code in (400, 422) and "type" in bad.text
                both = http.post(
                    "/v1/privacy/requests",
                    headers=auth,
                    json={"type": "delete", "profile_id": "p", "identifiers": [{"type": "email", "value": "a@b.c"}]},
                )
                assert both.status_code == 400 and both.json()["code"] == "invalid_input"
                forbidden = http.post("/v1/privacy/requests", json={"type": "export", "profile_id": "x"},
                                      headers={"Authorization": f"Bearer {read}"})  # fmt: skip
                assert forbidden.status_code == 403
                made = http.post(
                    "/v1/privacy/requests",
                    headers=auth,
                    json={"type": "export", "identifiers": [{"type": "user_id", "value": "ex1"}]},
                )
                assert made.status_code == 202 and made.json()["status"] in ("pending", "running", "done")
                rid = made.json()["id"]
                done = _wait(lambda: (r := http.get(f"/v1/privacy/requests/{rid}", headers=auth).json())["status"]
                             == "done" and r)  # fmt: skip
                assert done["requested_by"] == admin[0].id and done["download"]["available"]
                doc = http.get(done["download"]["url"], headers=auth)
                assert doc.status_code == 200 and doc.headers["content-type"].startswith("application/json")
                body = doc.json()
                assert {e["event"] for e in body["events"]} >= {"Order Completed"}
                assert [r["external_id"] for r in body["records"]] == ["x9"]
                assert body["profile"][0]["traits"]["email"] == "ex@example.com"
                assert any(s["source"] == "crm" for s in body["profile"][0]["trait_sources"])
                pid = body["profile"][0]["id"]
                consent = http.get(f"/v1/profiles/{pid}/consent", headers={"Authorization": f"Bearer {read}"})
                assert consent.status_code == 200 and consent.json()["categories"]["marketing"]["granted"] is True
                assert body["profile"][0]["consent"]["categories"]["marketing"]["granted"] is True
                listed = http.get("/v1/privacy/requests?limit=1", headers=auth).json()
                assert listed["data"][0]["id"] == rid and listed["cursor"]["has_more"] is False
                assert http.get("/v1/privacy/requests/prq_nope", headers=auth).status_code == 404
                time.sleep(2)  # the export's time (1.8 s here) runs out
                gone = http.get(done["download"]["url"], headers=auth)
                assert gone.status_code == 410 and gone.json()["code"] == "export_expired"
                assert not list((tmp_path / "api.db.privacy-exports").glob("*.json"))
                deleting = http.post(
                    "/v1/privacy/requests",
                    headers=auth,
                    json={"type": "delete", "identifiers": [{"type": "user_id", "value": "ex1"}]},
                )
                assert deleting.status_code == 202
                rid = deleting.json()["id"]
                _wait(lambda: http.get(f"/v1/privacy/requests/{rid}", headers=auth).json()["status"] == "done")
                assert http.get("/v1/profiles/lookup?user_id=ex1", headers=auth).status_code == 404
                # suppressed: acknowledged as Segment does (SDKs do not retry), not stored
                body = {"type": "suppress", "identifiers": [{"type": "user_id", "value": "ex1"}]}
                suppress = http.post("/v1/privacy/requests", headers=auth, json=body)
                rid = suppress.json()["id"]
                _wait(lambda: http.get(f"/v1/privacy/requests/{rid}", headers=auth).json()["status"] == "done")
                tracked = http.post("/v1/track", auth=(key, ""), json={"userId": "ex1", "event": "Came Back"})
                assert tracked.status_code == 200 and tracked.json() == {"success": True}
                assert count(cdp, "events", "user_id = 'ex1'") == 0
        finally:
            srv.should_exit = True
            thread.join(timeout=10)


def test_cli_delete_and_show(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "cli.db"
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        key = cdp.keys.create("write", "web")[1]
        cdp.ingest.batch({"batch": [{"type": "track", "userId": "cli-user", "event": "X"}]}, write_key=key)
    cdp_bin = [sys.executable, "-m", "cdp.cli"] if False else [str(Path(sys.executable).parent / "cdp")]
    out = subprocess.run([*cdp_bin, "privacy", "delete", "--db", str(db), "--user-id", "cli-user"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"status": "done"' in out.stdout and '"events": 1' in out.stdout
    bad = subprocess.run([*cdp_bin, "privacy", "delete", "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "identifiers" in bad.stderr
    assert httpx  # keeps the import for type checkers of the live-server helpers
