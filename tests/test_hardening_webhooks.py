"""Webhooks under failure: order a receiver can rebuild after an outage, and a lost secret-key file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from cdp import CDP
from tests.test_webhooks import (  # noqa: F401  (receiver is a fixture)
    PRO,
    Receiver,
    eventually,
    people,
    receiver,
    webhook_settings,
)

USERS = [f"u{i}" for i in range(8)]


class OrderedReceiver:
    """What the README's example receiver does: per profile and segment, keep the message with the highest
    ``sequence`` and take the membership it reports (``current`` when present)."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], tuple[int, bool]] = {}

    def apply(self, payload: dict[str, Any]) -> None:
        data = payload["data"]
        key = (data["profile"]["id"], data["segment"]["key"])
        member = data["current"]["member"] if "current" in data else payload["type"] == "segment.entered"
        seen = self.state.get(key)
        if seen is None or data["sequence"] > seen[0]:
            self.state[key] = (data["sequence"], member)


def test_a_receiver_down_longer_than_the_retries_rebuilds_the_right_state(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    settings = webhook_settings(tmp_path, webhooks_retry_schedule=[0, 0.2, 0.2])  # gives up after ~0.4 s
    receiver.respond = lambda r: (503, {}, b"down")
    with CDP(settings) as cdp:
        _, key = cdp.keys.create("write", "web")
        hook = cdp.webhooks.create(receiver.url)
        receiver.secrets = [hook["secret"]]
        cdp.webhooks.start()
        people(cdp, key, dict.fromkeys(USERS, "pro"))
        cdp.segments.create(PRO)
        cdp.segments.compute("pro")  # every profile enters: each message fails after the whole schedule
        eventually(lambda: cdp.webhooks.get(hook["id"])["failed_deliveries"] == len(USERS))

        receiver.respond = lambda r: (204, {}, b"")  # the receiver is back
        people(cdp, key, dict.fromkeys(USERS, "free"))
        cdp.segments.compute("pro")  # every profile leaves: delivered now
        receiver.wait(len(USERS))
        cdp.webhooks.replay(hook["id"], since="2000-01-01T00:00:00Z")  # the failed "entered" ones arrive last
        arrived = [r.payload for r in receiver.wait(2 * len(USERS))]
        members = {r["profile_id"] for r in cdp.store.query("SELECT profile_id FROM memberships")}

    assert [p["type"] for p in arrived[-len(USERS) :]] == ["segment.entered"] * len(USERS)
    # In arrival order every profile would end up a member: the wrong answer the ordering fields prevent.
    naive = {p["data"]["profile"]["id"]: p["type"] == "segment.entered" for p in arrived}
    assert all(naive.values())
    ordered = OrderedReceiver()
    for payload in arrived:
        ordered.apply(payload)
    assert members == set()
    assert {pid: member for (pid, _), (_, member) in ordered.state.items()} == {pid: False for pid in naive}
    # the sequence alone is enough too: each profile's "exited" has the higher number
    for pid in naive:
        mine = [p for p in arrived if p["data"]["profile"]["id"] == pid]
        latest = max(mine, key=lambda p: p["data"]["sequence"])
        assert latest["type"] == "segment.exited"
        assert all(p["data"]["current"] == {"member": False, "as_of": p["data"]["current"]["as_of"]} for p in mine)


def test_a_missing_secret_key_file_is_loud_and_rotation_resumes_at_once(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = webhook_settings(tmp_path)
    with CDP(settings) as cdp:
        _, key = cdp.keys.create("write", "web")
        hook = cdp.webhooks.create(receiver.url)
    Path(f"{settings.db}.secret-key").unlink()  # lost (not in the backup, deleted by hand...)
    with CDP(settings) as cdp:
        with caplog.at_level(logging.WARNING, logger="cdp.webhooks"):
            cdp.webhooks.start()
        assert "secret-key file" in caplog.text and "is missing" in caplog.text
        people(cdp, key, {"u1": "pro"})
        cdp.segments.create(PRO)
        cdp.segments.compute("pro")
        held = eventually(lambda: cdp.webhooks.get(hook["id"])["held_reason"])
        assert "cannot decrypt" in held
        [pending] = cdp.webhooks.deliveries(hook["id"]).data
        assert pending["status"] == "pending" and pending["attempt_count"] == 0
        assert pending["held_reason"] == held
        assert receiver.requests == []

        rotated = cdp.webhooks.rotate_secret(hook["id"])
        receiver.secrets = [rotated["secret"]]
        # The lease of a claimed delivery is 95 s; the held one goes out within the receiver's 10 s wait.
        [request] = receiver.wait(1)
        assert request.verified_by == [0] and request.payload["type"] == "segment.entered"
        assert cdp.webhooks.get(hook["id"])["held_reason"] is None
