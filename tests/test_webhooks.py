"""Webhooks end to end: segment runs -> outbox -> dispatcher -> a real HTTP receiver on 127.0.0.1 that
verifies every request with the third-party ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h11
import orjson
import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook, WebhookVerificationError

from cdp import CDP, Settings
from cdp.cli import cli
from cdp.errors import InvalidInput
from cdp.timeutil import parse_ts, utcnow
from cdp.webhooks import delivery_queue, http_client, signing, urls
from cdp.webhooks.errors import SecretKeyUnavailable, UnknownMessage, UnsafeURL
from cdp.webhooks.vault import Vault
from tests.conftest import LiveServer

SCHEDULE = [0, 0.3, 0.3, 0.3]  # 4 attempts, 0.3 s apart
PRO = {"key": "pro", "name": "Pro plan", "rule": {"trait": "plan", "op": "eq", "value": "pro"}}
FREE = {"key": "free", "name": "Free plan", "rule": {"trait": "plan", "op": "eq", "value": "free"}}


def webhook_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": tmp_path / "cdp.db",
        "scheduler_enabled": False,
        "key_cache_seconds": 0,
        "webhooks_allow_private_urls": True,
        "webhooks_retry_schedule": SCHEDULE,
        "webhooks_retry_jitter": 0,
        "webhooks_poll_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return webhook_settings(tmp_path)


# -- the receiver --------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    verified_by: list[int]  # indexes into Receiver.secrets of the secrets whose signature verified
    status: int = 0

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


Responder = Callable[[Received], "tuple[int, dict[str, str], bytes]"]


@dataclass
class Receiver:
    """A real HTTP server on a free loopback port; every request is verified with ``standardwebhooks``."""

    secrets: list[str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    respond: Responder = lambda r: (200, {}, b"ok")
    cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        verified = []
        for i, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(i)
        received = Received(headers, body, time.time(), verified)
        status, extra, answer = self.respond(received)
        received.status = status
        with self.cond:
            self.requests.append(received)
            self.cond.notify_all()
        return status, extra, answer

    def ok(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def wait(self, count: int, *, ok: bool = True, timeout: float = 10) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.ok() if ok else self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(r.status, r.payload["type"]) for r in self.requests]
                    raise AssertionError(f"expected {count} requests, got {got}")
                self.cond.wait(left)
            return list(self.ok() if ok else self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status, extra, answer = state.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/hooks"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def failing(times: int, status: int = 500, headers: dict[str, str] | None = None) -> Responder:
    """Answer ``status`` to the first ``times`` requests, then 200."""
    seen = [0]
    lock = threading.Lock()

    def respond(r: Received) -> tuple[int, dict[str, str], bytes]:
        with lock:
            seen[0] += 1
            n = seen[0]
        if n <= times:
            return status, headers or {}, b'{"error": "try later"}'
        return 200, {}, b"ok"

    return respond


# -- helpers -------------------------------------------------------------------------------------------


def people(cdp: CDP, key: str, plans: dict[str, str]) -> None:
    batch = [{"type": "identify", "userId": user, "traits": {"plan": plan}} for user, plan in plans.items()]
    cdp.ingest.batch({"batch": batch}, write_key=key)


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def outbox_ids(cdp: CDP) -> list[tuple[str, str, str]]:
    rows = cdp.store.query("SELECT message_id, type, profile_id FROM outbox ORDER BY id")
    return [(r["message_id"], r["type"], r["profile_id"]) for r in rows]


def delivery(cdp: CDP, webhook_id: str, message_id: str) -> dict[str, Any]:
    return cdp.webhooks.deliveries(webhook_id, message_id=message_id).data[0]


# -- tests ---------------------------------------------------------------------------------------------


def test_subscribe_over_the_api_and_receive_signed_notifications(
    server: LiveServer, admin_key: str, write_key: str, read_key: str, receiver: Receiver
) -> None:
    cdp = server.cdp
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        created = http.post(
            "/v1/webhooks",
            json={"url": receiver.url, "events": ["segment.entered"], "segments": None, "description": "email tool"},
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_")
        assert len(base64.b64decode(hook["secret"].removeprefix("whsec_"))) == 32
        assert (hook["events"], hook["segments"], hook["enabled"]) == (["segment.entered"], None, True)
        shown = http.get(f"/v1/webhooks/{hook['id']}").json()
        assert "secret" not in shown and shown["description"] == "email tool"
        assert http.get("/v1/webhooks").json()["data"][0]["id"] == hook["id"]
        assert hook["secret"] not in http.get("/v1/webhooks").text
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as http:
        assert http.get("/v1/webhooks").status_code == 403
    with server.client() as http:
        assert http.get("/v1/webhooks").status_code == 401

    receiver.secrets = [hook["secret"]]
    cdp.webhooks.start()
    people(cdp, write_key, {"u1": "pro", "u2": "pro", "u3": "free"})
    cdp.segments.create(PRO)
    run = cdp.segments.compute("pro")
    got = receiver.wait(2)
    assert all(r.verified_by == [0] for r in receiver.requests)
    outbox = outbox_ids(cdp)
    assert sorted(r.id for r in got) == sorted(m for m, _, _ in outbox)
    for r in got:
        assert set(r.payload) == {"type", "timestamp", "data"} and r.payload["type"] == "segment.entered"
        data = r.payload["data"]
        assert data["segment"] == {"key": "pro", "name": "Pro plan"} and data["run_id"] == run.run_id
        assert data["profile"]["identifiers"][0]["type"] == "user_id" and data["entered_at"]
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 30
        assert r.headers["webhook-signature"].startswith("v1,") and len(r.body) < 20 * 1024
        assert r.headers["content-type"] == "application/json"
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        page = http.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 1}).json()
        assert page["cursor"]["has_more"] is True
        item = page["data"][0]
        assert item["status"] == "succeeded" and item["attempt_count"] == 1
        assert item["attempts"][0]["status_code"] == 200 and item["attempts"][0]["response"] == "ok"
        assert item["attempts"][0]["latency_ms"] >= 0 and item["attempts"][0]["at"]
        rest = http.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"cursor": page["cursor"]["next"]}).json()
        assert len(rest["data"]) == 1 and rest["cursor"]["has_more"] is False
        assert {item["message_id"], rest["data"][0]["message_id"]} == {r.id for r in got}


def test_api_validation_names_the_field(server: LiveServer, admin_key: str, receiver: Receiver) -> None:
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        for body, field_name in [
            ({"url": "ftp://example.com/x"}, "url"),
            ({"url": "not a url"}, "url"),
            ({"events": ["segment.entered"]}, "url"),
            ({"url": receiver.url, "events": ["segment.joined"]}, "events.0"),
            ({"url": receiver.url, "events": []}, "events"),
            ({"url": receiver.url, "segments": ["nope"]}, "segments[0]"),
            ({"url": receiver.url, "colour": "red"}, "colour"),
        ]:
            answer = http.post("/v1/webhooks", json=body)
            assert answer.status_code == 400, (body, answer.text)
            error = answer.json()
            assert set(error) == {"code", "message", "details"}
            fields = [e["field"] for e in error["details"].get("errors", [])] or [error["details"].get("field")]
            assert field_name in fields, (body, error)
        assert http.post("/v1/webhooks", json={"url": "ftp://x.test/"}).json()["code"] == "unsafe_url"
        missing = http.get("/v1/webhooks/wh_nope")
        assert (missing.status_code, missing.json()["code"]) == (404, "unknown_webhook")

        hook = http.post("/v1/webhooks", json={"url": receiver.url}).json()
        assert hook["events"] == [
            "segment.entered",
            "segment.exited",
            "profile.merged",
            "profile.split",
            "profile.deleted",
        ]
        patched = http.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False, "description": "paused"}).json()
        assert (patched["enabled"], patched["disabled_reason"], patched["description"]) == (False, "manual", "paused")
        again = http.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True, "events": ["segment.exited"]}).json()
        assert (again["enabled"], again["disabled_reason"], again["events"]) == (True, None, ["segment.exited"])
        bad = http.patch(f"/v1/webhooks/{hook['id']}", json={"url": "gopher://x"})
        assert bad.status_code == 400 and bad.json()["details"]["field"] == "url"
        replay = http.post(f"/v1/webhooks/{hook['id']}/replay", json={})
        assert replay.status_code == 400 and replay.json()["details"]["field"] == "message_id"
        replay = http.post(f"/v1/webhooks/{hook['id']}/replay", json={"since": "yesterday-ish"})
        assert replay.status_code == 400 and replay.json()["details"]["field"] == "since"
        replay = http.post(f"/v1/webhooks/{hook['id']}/replay", json={"message_id": "msg_nope"})
        assert replay.status_code == 404 and replay.json()["code"] == "unknown_message"
        assert http.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        assert http.get(f"/v1/webhooks/{hook['id']}").status_code == 404
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/v1/webhooks", "/v1/webhooks/{webhook_id}/replay", "/v1/webhooks/{webhook_id}/test"} <= set(paths)


def test_500_three_times_then_200_arrives_on_the_fourth_attempt_with_one_id(
    fresh_db: CDP, write_key: str, receiver: Receiver
) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    receiver.secrets = [hook["secret"]]
    receiver.respond = failing(3)
    fresh_db.webhooks.start()
    people(fresh_db, write_key, {"u1": "pro"})
    fresh_db.segments.create(PRO)
    fresh_db.segments.compute("pro")
    receiver.wait(1)
    assert [r.status for r in receiver.requests] == [500, 500, 500, 200]
    assert len({r.id for r in receiver.requests}) == 1 and all(r.verified_by == [0] for r in receiver.requests)
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= 0.25 for gap in gaps), gaps
    item = eventually(
        lambda: (d := delivery(fresh_db, hook["id"], receiver.requests[0].id))["status"] == "succeeded" and d
    )
    assert [a["status_code"] for a in item["attempts"]] == [500, 500, 500, 200]
    assert [a["outcome"] for a in item["attempts"]] == ["retrying", "retrying", "retrying", "succeeded"]
    assert all(a["next_attempt_at"] for a in item["attempts"][:3]) and item["attempts"][3]["next_attempt_at"] is None
    assert item["attempts"][0]["response"] == '{"error": "try later"}'
    assert fresh_db.webhooks.get(hook["id"])["failing_since"] is None


def test_after_the_last_retry_a_message_fails_and_replay_resends_it(
    server: LiveServer, admin_key: str, write_key: str, receiver: Receiver
) -> None:
    cdp = server.cdp
    hook = cdp.webhooks.create(receiver.url)
    receiver.secrets = [hook["secret"]]
    receiver.respond = lambda r: (500, {}, b"down")
    cdp.webhooks.start()
    people(cdp, write_key, {"u1": "pro", "u2": "pro"})
    cdp.segments.create(PRO)
    cdp.segments.compute("pro")
    receiver.wait(2 * len(SCHEDULE), ok=False)
    failed = eventually(lambda: len(page := cdp.webhooks.deliveries(hook["id"], status="failed").data) == 2 and page)
    assert all(d["attempt_count"] == len(SCHEDULE) and d["next_attempt_at"] is None for d in failed)
    assert failed[0]["attempts"][-1]["outcome"] == "failed"
    assert cdp.webhooks.get(hook["id"])["failed_deliveries"] == 2

    receiver.respond = lambda r: (204, {}, b"")
    first = failed[1]["message_id"]
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        answer = http.post(f"/v1/webhooks/{hook['id']}/replay", json={"message_id": first})
        assert answer.status_code == 200 and answer.json() == {"replayed": 1, "enabled": True}
        assert [r.id for r in receiver.wait(1)] == [first]
        since = parse_ts(failed[0]["created_at"])
        assert since is not None
        answer = http.post(f"/v1/webhooks/{hook['id']}/replay", json={"since": since.isoformat()})
        assert answer.json()["replayed"] == 1
        assert {r.id for r in receiver.wait(2)} == {d["message_id"] for d in failed}
        # A message that succeeded can be replayed too: same webhook-id, the receiver deduplicates.
        http.post(f"/v1/webhooks/{hook['id']}/replay", json={"message_id": first})
        assert [r.id for r in receiver.wait(3)].count(first) == 2
    assert all(r.verified_by == [0] for r in receiver.requests)
    done = eventually(lambda: delivery(cdp, hook["id"], first)["attempt_count"] == len(SCHEDULE) + 2)
    assert done


def test_restart_mid_retry_still_delivers(tmp_path: Path, receiver: Receiver) -> None:
    settings = webhook_settings(tmp_path, webhooks_retry_schedule=[0, 1.0, 1.0])
    receiver.respond = lambda r: (503, {}, b"")
    with CDP(settings) as cdp:
        _, key = cdp.keys.create("write", "web")
        hook = cdp.webhooks.create(receiver.url)
        receiver.secrets = [hook["secret"]]
        people(cdp, key, {"u1": "pro"})
        cdp.segments.create(PRO)
        cdp.segments.compute("pro")
        cdp.webhooks.start()
        first = receiver.wait(1, ok=False)[0]
        eventually(lambda: delivery(cdp, hook["id"], first.id)["attempt_count"] == 1)
    # closed while waiting for the retry; the next process picks it up
    receiver.respond = lambda r: (200, {}, b"ok")
    with CDP(settings) as cdp:
        cdp.webhooks.start()
        again = receiver.wait(1)[0]
        assert again.id == first.id and again.verified_by == [0]
        item = eventually(lambda: (d := delivery(cdp, hook["id"], first.id))["status"] == "succeeded" and d)
        assert [a["status_code"] for a in item["attempts"]] == [503, 200]


def test_a_lease_left_by_a_crashed_process_runs_out(fresh_db: CDP, write_key: str, receiver: Receiver) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    receiver.secrets = [hook["secret"]]
    people(fresh_db, write_key, {"u1": "pro"})
    fresh_db.segments.create(PRO)
    fresh_db.segments.compute("pro")

    def crashed_claim(conn: Any) -> list[delivery_queue.Claimed]:
        delivery_queue.fan_out(conn, utcnow(), 0)
        return delivery_queue.claim(conn, utcnow(), 0.5, 10, {})

    claimed_at = time.time()
    assert len(fresh_db.store.write(crashed_claim)) == 1  # claimed, then "the process died"
    fresh_db.webhooks.start()
    [request] = receiver.wait(1)
    assert request.at - claimed_at >= 0.45  # not before the lease ran out


def test_410_disables_the_endpoint_and_enabling_resumes(fresh_db: CDP, write_key: str, receiver: Receiver) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    receiver.secrets = [hook["secret"]]
    receiver.respond = lambda r: (410, {}, b"gone")
    fresh_db.webhooks.start()
    people(fresh_db, write_key, {"u1": "pro"})
    fresh_db.segments.create(PRO)
    fresh_db.segments.compute("pro")
    receiver.wait(1, ok=False)
    state = eventually(lambda: not (h := fresh_db.webhooks.get(hook["id"]))["enabled"] and h)
    assert state["disabled_reason"] == "gone" and state["disabled_at"]
    people(fresh_db, write_key, {"u2": "pro"})
    fresh_db.segments.compute("pro")
    time.sleep(0.5)
    assert len(receiver.requests) == 1  # nothing more goes to a disabled endpoint
    receiver.respond = lambda r: (200, {}, b"ok")
    fresh_db.webhooks.update(hook["id"], {"enabled": True})
    assert [r.payload["data"]["profile"]["identifiers"][0]["value"] for r in receiver.wait(1)] == ["u1"]


def test_failing_without_success_for_too_long_disables(tmp_path: Path, receiver: Receiver) -> None:
    settings = webhook_settings(tmp_path, webhooks_retry_schedule=[0] + [0.2] * 10, webhooks_disable_after_seconds=0.5)
    receiver.respond = lambda r: (500, {}, b"")
    with CDP(settings) as cdp:
        _, key = cdp.keys.create("write", "web")
        hook = cdp.webhooks.create(receiver.url)
        people(cdp, key, {"u1": "pro"})
        cdp.segments.create(PRO)
        cdp.segments.compute("pro")
        cdp.webhooks.start()
        state = eventually(lambda: not (h := cdp.webhooks.get(hook["id"]))["enabled"] and h)
        assert state["disabled_reason"] == "failing" and state["failing_since"]
        assert 3 <= len(receiver.requests) <= 5


def test_retry_after_on_429_is_honoured(fresh_db: CDP, write_key: str, receiver: Receiver) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    receiver.respond = failing(1, 429, {"Retry-After": "1"})
    fresh_db.webhooks.start()
    people(fresh_db, write_key, {"u1": "pro"})
    fresh_db.segments.create(PRO)
    fresh_db.segments.compute("pro")
    receiver.wait(1)
    first, second = receiver.requests
    assert second.at - first.at >= 0.95  # the schedule alone says 0.3 s
    assert fresh_db.webhooks.get(hook["id"])["paused_until"]


def test_rotation_signs_with_both_secrets_during_the_overlap(
    server: LiveServer, admin_key: str, write_key: str, receiver: Receiver
) -> None:
    cdp = server.cdp
    old = cdp.webhooks.create(receiver.url)
    cdp.webhooks.start()
    cdp.segments.create(PRO)
    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        rotated = http.post(f"/v1/webhooks/{old['id']}/rotate-secret").json()
    new = rotated["secret"]
    assert new != old["secret"] and rotated["previous_secret_expires_at"] > rotated["secret_rotated_at"]
    receiver.secrets = [old["secret"], new]
    people(cdp, write_key, {"u1": "pro"})
    cdp.segments.compute("pro")
    [during] = receiver.wait(1)
    assert during.verified_by == [0, 1] and len(during.headers["webhook-signature"].split(" ")) == 2
    # Each secret alone verifies, with the third-party library.
    for secret in (old["secret"], new):
        Webhook(secret).verify(during.body, during.headers)

    with server.client(headers={"Authorization": f"Bearer {admin_key}"}) as http:
        latest = http.post(f"/v1/webhooks/{old['id']}/rotate-secret", json={"overlap_seconds": 0}).json()
        assert latest["previous_secret_expires_at"] is None
        receiver.secrets = [old["secret"], new, latest["secret"]]
        pinged = http.post(f"/v1/webhooks/{old['id']}/test")
        assert pinged.status_code == 200 and pinged.json()["status"] == "succeeded"
    ping = receiver.wait(2)[-1]
    assert ping.payload["type"] == "ping" and ping.verified_by == [2]
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(ping.body, ping.headers)


def test_filters_on_events_and_segments(fresh_db: CDP, write_key: str, receiver: Receiver) -> None:
    exits = fresh_db.webhooks.create(receiver.url + "/exits", events=["segment.exited"])
    fresh_db.segments.create(PRO)
    fresh_db.segments.create(FREE)
    pro_only = fresh_db.webhooks.create(receiver.url + "/pro", segments=["pro"])
    everything = fresh_db.webhooks.create(receiver.url + "/all")
    people(fresh_db, write_key, {"u1": "pro", "u2": "free"})
    fresh_db.segments.compute_many()
    people(fresh_db, write_key, {"u1": "free"})
    fresh_db.segments.compute_many()
    # u3 seen anonymously, then identified as u2: the two profiles merge
    fresh_db.ingest.batch(
        {"batch": [
            {"type": "track", "anonymousId": "anon-3", "event": "Viewed"},
            {"type": "identify", "userId": "u2", "anonymousId": "anon-3", "traits": {"plan": "free"}},
        ]},
        write_key=write_key,
    )  # fmt: skip
    assert "profile.merged" in {t for _, t, _ in outbox_ids(fresh_db)}
    receiver.secrets = [exits["secret"], pro_only["secret"], everything["secret"]]
    fresh_db.webhooks.start()
    total = len(outbox_ids(fresh_db))
    messages = {m: (t, p) for m, t, p in outbox_ids(fresh_db)}
    segments = {r["message_id"]: r["segment_key"] for r in fresh_db.store.query("SELECT * FROM outbox")}
    want_exits = {m for m, (t, _) in messages.items() if t == "segment.exited"}
    want_pro = {m for m, (t, _) in messages.items() if segments[m] == "pro" or t == "profile.merged"}
    got = receiver.wait(total + len(want_exits) + len(want_pro))
    time.sleep(0.3)
    assert len(receiver.requests) == len(got)  # and nothing else
    by_endpoint: dict[int, set[str]] = {}
    for r in got:
        assert len(r.verified_by) == 1
        by_endpoint.setdefault(r.verified_by[0], set()).add(r.id)
    assert by_endpoint == {0: want_exits, 1: want_pro, 2: set(messages)}
    assert len(want_exits) == 1 and len(want_pro) == 3


def test_one_profile_goes_out_in_order_while_others_are_not_held_up(
    fresh_db: CDP, write_key: str, receiver: Receiver
) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    receiver.secrets = [hook["secret"]]
    fresh_db.segments.create(PRO)
    fresh_db.segments.create(FREE)
    people(fresh_db, write_key, {"a": "pro"})
    fresh_db.segments.compute("pro")  # a entered pro
    people(fresh_db, write_key, {"a": "free", "b": "pro"})
    fresh_db.segments.compute("pro")  # a exited pro, b entered pro
    fresh_db.segments.compute("free")  # a entered free
    a = fresh_db.profiles.lookup_id(user_id="a")
    a_messages = [m for m, _, p in outbox_ids(fresh_db) if p == a]
    assert len(a_messages) == 3
    fails = failing(2)
    receiver.respond = lambda r: fails(r) if r.id == a_messages[0] else (200, {}, b"ok")
    fresh_db.webhooks.start()
    receiver.wait(4)
    a_requests = [r for r in receiver.requests if r.payload["data"]["profile"]["id"] == a]
    assert [r.id for r in a_requests] == [a_messages[0]] * 3 + a_messages[1:]
    assert [r.status for r in a_requests] == [500, 500, 200, 200, 200]
    b_request = next(r for r in receiver.requests if r.payload["data"]["profile"]["id"] != a)
    assert b_request.at < a_requests[2].at  # b did not wait for a's retries


def test_private_targets_are_refused_unless_allowed(tmp_path: Path, receiver: Receiver) -> None:
    strict = webhook_settings(tmp_path, webhooks_allow_private_urls=False)
    with CDP(strict) as cdp:
        for url in [
            receiver.url,
            "http://localhost:8080/x",
            "http://10.1.2.3/x",
            "http://192.168.0.10/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://[fe80::1]/x",
            "http://0.0.0.0/x",
            "https://user:pw@example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ]:
            with pytest.raises(UnsafeURL) as info:
                cdp.webhooks.create(url)
            assert info.value.details["field"] == "url"
            assert info.value.status == 400
    # Saved while allowed, sent while not (a host can also start resolving somewhere private): refused at send time.
    with CDP(webhook_settings(tmp_path)) as cdp:
        _, key = cdp.keys.create("write", "web")
        hook = cdp.webhooks.create(receiver.url)
        people(cdp, key, {"u1": "pro"})
        cdp.segments.create(PRO)
        cdp.segments.compute("pro")
    with CDP(strict) as cdp:
        cdp.webhooks.start()
        item = eventually(lambda: (d := cdp.webhooks.deliveries(hook["id"]).data) and d[0]["attempts"] and d[0])
        assert item["attempts"][0]["error"].startswith("refused:") and "loopback" in item["attempts"][0]["error"]
    assert receiver.requests == []


def test_address_checks_and_pinning() -> None:
    import ipaddress

    assert urls.unsafe_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert urls.unsafe_reason(ipaddress.ip_address("2606:2800:220:1::1")) is None
    for address in ["127.0.0.1", "10.0.0.1", "172.16.0.1", "100.64.0.1", "169.254.1.1", "::1", "fd00::1", "::"]:
        assert urls.unsafe_reason(ipaddress.ip_address(address)), address
    both = ["93.184.216.34", "2606:2800:220:1::1"]
    assert urls.connect_addresses("hooks.example.com", both) == both  # tried in the resolver's order
    with pytest.raises(UnsafeURL):  # every address is checked, not only the one connected to
        urls.connect_addresses("hooks.example.com", ["93.184.216.34", "10.0.0.7"])


class ScriptedServer:
    """A raw TCP server on 127.0.0.1 answering each request on a connection with the next scripted bytes
    (None: close the connection without answering). Counts connections and requests."""

    def __init__(self, answers: list[bytes | None], tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):  # the client refused our certificate
                conn.close()
                return
        # A client that resets a connection it is done with (a stale kept-alive one) has closed it: not an error
        # of this script (it failed a full run once, as an unhandled exception in this thread).
        with conn, contextlib.suppress(ConnectionResetError):
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                size = int(next(v for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                                if k.lower() == b"content-length"))  # fmt: skip
                while len(rest) < size:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:size])
                buffer = rest[size:]
                answer = self.answers.pop(0) if self.answers else None
                if answer is None:
                    return
                conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


def post_all(
    port: int,
    count: int,
    scheme: str = "http",
    host: str = "hooks.test",
    addresses: tuple[str, ...] = ("127.0.0.1",),
    **client_options: Any,
) -> list[http_client.Answer | BaseException]:
    async def main() -> list[http_client.Answer | BaseException]:
        http = http_client.Client(user_agent="test", **client_options)
        out: list[http_client.Answer | BaseException] = []
        try:
            for i in range(count):
                try:
                    out.append(
                        await http.post(
                            scheme=scheme, addresses=addresses, port=port, host=host,
                            host_header=f"{host}:{port}", target="/in?x=1", headers={"webhook-id": f"m{i}"},
                            body=b'{"n": %d}' % i,
                        )
                    )  # fmt: skip
                except (OSError, EOFError, h11.ProtocolError) as exc:
                    out.append(exc)
        finally:
            await http.aclose()
        return out

    return asyncio.run(main())


def test_http_client_framing_keep_alive_and_stale_connections() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    continue_then_ok = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    limited = b"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\ncontent-length: 2\r\n\r\nno"
    server = ScriptedServer([chunked, continue_then_ok, limited, None])
    try:
        first, second, third, fourth = post_all(server.port, 4)
        assert isinstance(first, http_client.Answer) and (first.status, first.head) == (200, b"hello world")
        assert isinstance(second, http_client.Answer) and second.status == 204
        assert isinstance(third, http_client.Answer) and third.headers["retry-after"] == "7"
        # The server closed the kept-alive connection without answering the 4th request: it was sent once
        # more on a new connection, which the script also closes: that failure is reported.
        assert isinstance(fourth, BaseException)
        assert server.connections == 2 and len(server.requests) == 5
        assert server.requests[0].startswith(b"POST /in?x=1 HTTP/1.1\r\n")
        assert b"host: hooks.test:" in server.requests[0] and b"webhook-id: m0" in server.requests[0]
    finally:
        server.close()

    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    big = b"HTTP/1.1 500 Oops\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    empty = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    server = ScriptedServer([closing, big, empty, empty])
    try:
        answers = post_all(server.port, 3, keep_bytes=10, max_body_bytes=1000)
        assert [a.status for a in answers if isinstance(a, http_client.Answer)] == [200, 500, 200]
        big_answer = answers[1]
        assert isinstance(big_answer, http_client.Answer) and big_answer.head == b"x" * 10
        assert server.connections == 3  # "connection: close" and an unread body each end a connection
        # An address that refuses the connection is skipped for the next one.
        [answer] = post_all(server.port, 1, addresses=("127.0.0.2", "127.0.0.1"))
        assert isinstance(answer, http_client.Answer) and answer.status == 200
    finally:
        server.close()


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``name`` and a client context that trusts only it."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(utcnow() - timedelta(days=1))
        .not_valid_after(utcnow() + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_connects_to_the_checked_address_and_verifies_the_host(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path, "hooks.test")
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    server = ScriptedServer([ok, ok], tls=server_tls)
    try:
        # Connected to 127.0.0.1, spoke TLS to "hooks.test" (SNI + certificate check): kept alive and reused.
        answers = post_all(server.port, 2, scheme="https", ssl_context=client_tls)
        assert [a.status for a in answers if isinstance(a, http_client.Answer)] == [200, 200]
        assert server.connections == 1
        [refused] = post_all(server.port, 1, scheme="https", host="evil.test", ssl_context=client_tls)
        assert isinstance(refused, ssl.SSLCertVerificationError)
    finally:
        server.close()


def test_secrets_at_rest_cannot_sign_without_the_key(tmp_path: Path, receiver: Receiver) -> None:
    settings = webhook_settings(tmp_path)
    with CDP(settings) as cdp:
        hook = cdp.webhooks.create(receiver.url)
        stored = cdp.store.query("SELECT secret FROM webhook_endpoints")[0]["secret"]
    raw = hook["secret"].removeprefix("whsec_")
    assert raw not in stored and hook["secret"] not in stored and stored.startswith("v1:")
    key_file = Path(f"{settings.db}.secret-key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Vault(settings).decrypt(stored, hook["id"]) == hook["secret"]
    with pytest.raises(SecretKeyUnavailable):
        Vault(settings).decrypt(stored, "wh_someone_else")  # bound to its endpoint
    other = webhook_settings(tmp_path, secret_key_file=tmp_path / "other.key")
    with pytest.raises(SecretKeyUnavailable):
        Vault(other).decrypt(stored, hook["id"])
    from_env = webhook_settings(tmp_path, secret_key="correct horse battery staple")
    sealed = Vault(from_env).encrypt("whsec_x", "wh_1")
    assert Vault(from_env).decrypt(sealed, "wh_1") == "whsec_x"
    with pytest.raises(SecretKeyUnavailable):
        Vault(settings).decrypt(sealed, "wh_1")


def test_bodies_stay_under_20_kb() -> None:
    identifiers = [{"type": "email", "value": f"person{i}@example.com" + "x" * 400} for i in range(50)]
    data = orjson.dumps({"profile": {"id": "prof_1", "identifiers": identifiers}, "run_id": 1}).decode()
    body = signing.body("segment.entered", "2026-01-01T00:00:00.000Z", data)
    value = json.loads(body)
    assert len(body) <= signing.MAX_BODY_BYTES and value["data"]["profile"]["identifiers_truncated"] is True
    assert 0 < len(value["data"]["profile"]["identifiers"]) < 50 and value["data"]["run_id"] == 1


def test_library_validation(fresh_db: CDP, receiver: Receiver) -> None:
    hook = fresh_db.webhooks.create(receiver.url)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"events": "segment.entered"}, "events"),
        ({"segments": []}, "segments"),
        ({"enabled": "yes"}, "enabled"),
        ({"secret": "whsec_x"}, "secret"),
        ({"description": "x" * 1001}, "description"),
    ]
    for changes, field_name in cases:
        with pytest.raises(InvalidInput) as info:
            fresh_db.webhooks.update(hook["id"], changes)
        assert info.value.details["field"] == field_name
    with pytest.raises(UnknownMessage):
        fresh_db.webhooks.replay(hook["id"], message_id="msg_nope")


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.setenv("CDP_WEBHOOKS_ALLOW_PRIVATE_URLS", "true")
    db = str(tmp_path / "cli.db")

    def run(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, [*args, "--db", db])
        assert result.exit_code == code, result.output
        return result.output

    with CDP(Settings(db=tmp_path / "cli.db")) as cdp:
        cdp.segments.create(PRO)
    out = run("webhooks", "create", receiver.url, "--event", "segment.entered", "--segment", "pro")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    [hook] = json.loads(run("webhooks", "list", "--json"))
    assert (hook["events"], hook["segments"]) == (["segment.entered"], ["pro"]) and "secret" not in hook
    receiver.secrets = [secret]
    assert "ping msg_" in run("webhooks", "test", hook["id"])
    assert receiver.wait(1)[0].verified_by == [0]
    deliveries_out = run("webhooks", "deliveries", hook["id"])
    assert "ping" in deliveries_out and "#1" in deliveries_out
    rotated = run("webhooks", "rotate-secret", hook["id"]).strip().splitlines()[-1]
    assert rotated.startswith("whsec_") and rotated != secret
    assert "disabled (manual)" in run("webhooks", "update", hook["id"], "--disable", "--all-segments")
    ping_id = receiver.requests[0].id
    assert "1 message(s) queued again (webhook disabled)" in run(
        "webhooks", "replay", hook["id"], "--message-id", ping_id
    )
    receiver.respond = lambda r: (500, {}, b"")
    assert "not accepted" in run("webhooks", "test", hook["id"], code=1)
    assert "deleted" in run("webhooks", "delete", hook["id"])
    assert json.loads(run("webhooks", "list", "--json")) == []
    assert "no webhook" in run("webhooks", "delete", hook["id"], code=1)
