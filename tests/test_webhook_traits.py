"""Traits where destinations need them: in segment.entered/exited payloads (each subscription gets the traits
it named, and only those) and in member lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp import CDP, trait_picks
from cdp.errors import InvalidInput
from cdp.settings import Settings
from cdp.webhooks import signing
from tests import test_webhooks
from tests.conftest import LiveServer
from tests.test_webhooks import Receiver, webhook_settings

receiver = test_webhooks.receiver  # the real HTTP receiver fixture

PRO = {"key": "pro", "name": "Pro plan", "rule": {"trait": "plan", "op": "eq", "value": "pro"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return webhook_settings(tmp_path)


def identify(cdp: CDP, key: str, people: dict[str, dict[str, Any]]) -> None:
    batch = [{"type": "identify", "userId": user, "traits": traits} for user, traits in people.items()]
    cdp.ingest.batch({"batch": batch}, write_key=key)


def test_each_subscription_receives_the_traits_it_named(fresh_db: CDP, write_key: str, receiver: Receiver) -> None:
    fresh_db.segments.create(PRO)
    mailer = fresh_db.webhooks.create(receiver.url + "/mail", segments=["pro"], traits=["email", "first_name"])
    crm = fresh_db.webhooks.create(receiver.url + "/crm", traits=["address.city", "order_count", "missing"])
    bare = fresh_db.webhooks.create(receiver.url + "/bare")
    assert mailer["traits"] == ["email", "first_name"] and bare["traits"] is None
    identify(fresh_db, write_key, {
        "u1": {"plan": "pro", "email": "ann@example.com", "firstName": "Ann", "lastName": "Lee",
               "address": {"city": "Oslo"}},
        "u2": {"plan": "pro", "email": "bob@example.com", "bio": "x" * 2000},
    })  # fmt: skip
    fresh_db.identity.refresh_traits()
    fresh_db.segments.compute("pro")
    receiver.secrets = [mailer["secret"], crm["secret"], bare["secret"]]
    fresh_db.webhooks.start()
    got = receiver.wait(6)
    by_endpoint: dict[int, dict[str, Any]] = {}
    for r in got:
        assert r.payload["type"] == "segment.entered"
        profile = r.payload["data"]["profile"]
        by_endpoint.setdefault(r.verified_by[0], {})[profile["identifiers"][0]["value"]] = profile
    ann = by_endpoint[0]["ann@example.com"]
    assert ann["traits"] == {"email": "ann@example.com", "first_name": "Ann"}  # nothing it did not ask for
    assert by_endpoint[0]["bob@example.com"]["traits"] == {"email": "bob@example.com", "first_name": None}
    assert by_endpoint[1]["ann@example.com"]["traits"] == {"address.city": "Oslo", "order_count": 0, "missing": None}
    assert all("traits" not in p for p in by_endpoint[2].values())  # identifiers only, as before
    # A subscription can change its traits; a bad name is a 4xx naming the field.
    changed = fresh_db.webhooks.update(bare["id"], {"traits": ["email"]})
    assert changed["traits"] == ["email"]
    with pytest.raises(InvalidInput) as err:
        fresh_db.webhooks.update(bare["id"], {"traits": ["email", "no spaces please"]})
    assert err.value.details["field"] == "traits[1]"


def test_long_values_are_cut_and_bodies_stay_under_the_limit(fresh_db: CDP, write_key: str) -> None:
    fresh_db.segments.create(PRO)
    names = [f"t{i}" for i in range(trait_picks.MAX_TRAITS)]
    fresh_db.webhooks.create("http://127.0.0.1:9/hooks", traits=names)
    identify(fresh_db, write_key, {"u1": {"plan": "pro", **{n: "y" * 500 for n in names}, "t0": "z" * 5000}})
    fresh_db.identity.refresh_traits()
    fresh_db.segments.compute("pro")
    (payload,) = [r["payload"] for r in fresh_db.store.query("SELECT payload FROM outbox")]
    profile = orjson.loads(payload)["profile"]
    assert profile["traits"]["t0"] is None and profile["traits_truncated"] == ["t0"]
    assert profile["traits"]["t1"] == "y" * 500
    body = signing.body("segment.entered", "2026-01-01T00:00:00.000Z", payload)
    assert len(body) <= signing.MAX_BODY_BYTES
    with pytest.raises(InvalidInput):
        fresh_db.webhooks.create("http://127.0.0.1:9/hooks", traits=[*names, "one_more"])


def test_members_with_traits(server: LiveServer, write_key: str, read_key: str) -> None:
    cdp = server.cdp
    cdp.segments.create(PRO)
    identify(cdp, write_key, {f"u{i}": {"plan": "pro", "email": f"p{i}@example.com", "firstName": f"P{i}"}
                              for i in range(5)})  # fmt: skip
    cdp.identity.refresh_traits()
    cdp.segments.compute("pro")
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        first = client.get("/v1/segments/pro/members", params={"traits": "email,first_name", "limit": 3}).json()
        rest = client.get(
            "/v1/segments/pro/members", params={"traits": "email,first_name", "cursor": first["cursor"]["next"]}
        ).json()
        members = first["data"] + rest["data"]
        assert len(members) == 5 and first["cursor"]["has_more"] is True
        assert sorted(m["traits"]["email"] for m in members) == [f"p{i}@example.com" for i in range(5)]
        assert all(m["traits"]["first_name"] == "P" + m["traits"]["email"][1] for m in members)
        plain = client.get("/v1/segments/pro/members").json()["data"]
        assert all("traits" not in m for m in plain)
        bad = client.get("/v1/segments/pro/members", params={"traits": "email,bad name"})
        assert bad.status_code == 400 and bad.json()["details"]["field"] == "traits[1]"
