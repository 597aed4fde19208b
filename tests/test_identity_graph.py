"""The deterministic identity graph, linked in the ingest transaction, on a real store."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cdp import CDP, Settings
from cdp.errors import UnknownProfile
from tests.conftest import LiveServer, count


def send(cdp: CDP, key: str, *messages: dict[str, Any]) -> None:
    cdp.ingest.batch({"batch": list(messages)}, write_key=key)


def profile_of(cdp: CDP, **where: str) -> str:
    return cdp.profiles.lookup_id(**where)


def event_profiles(cdp: CDP) -> dict[str, str]:
    return {r[0]: r[1] for r in cdp.store.reader().execute("SELECT message_id, profile_id FROM events")}


def test_anonymous_session_then_identify_is_one_profile(fresh_db: CDP, write_key: str) -> None:
    send(
        fresh_db,
        write_key,
        {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "e1"},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "messageId": "e2"},
    )
    before = event_profiles(fresh_db)
    assert before["e1"] and before["e1"] == before["e2"]  # a profile exists as soon as the event is stored
    send(
        fresh_db,
        write_key,
        {"type": "identify", "anonymousId": "a1", "userId": "u1", "traits": {"email": "Ann@X.com"}, "messageId": "e3"},
        {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "e4"},
    )
    after = event_profiles(fresh_db)
    assert len(set(after.values())) == 1
    pid = after["e1"]
    assert profile_of(fresh_db, email=" ANN@x.com") == pid
    assert profile_of(fresh_db, user_id="u1") == pid == profile_of(fresh_db, anonymous_id="a1")


def test_two_anonymous_profiles_merge_oldest_survives(fresh_db: CDP, write_key: str) -> None:
    send(fresh_db, write_key, {"type": "page", "anonymousId": "laptop", "messageId": "l1"})
    send(fresh_db, write_key, {"type": "page", "anonymousId": "phone", "messageId": "p1"})
    laptop, phone = profile_of(fresh_db, anonymous_id="laptop"), profile_of(fresh_db, anonymous_id="phone")
    assert laptop != phone
    send(
        fresh_db,
        write_key,
        {"type": "identify", "anonymousId": "phone", "userId": "u9", "messageId": "i1"},
        {"type": "identify", "anonymousId": "laptop", "userId": "u9", "messageId": "i2"},
    )
    assert profile_of(fresh_db, anonymous_id="laptop") == laptop == profile_of(fresh_db, anonymous_id="phone")
    assert set(event_profiles(fresh_db).values()) == {laptop}
    assert fresh_db.profiles.get(phone)["id"] == laptop  # the merged-away id answers with the survivor
    (merge,) = fresh_db.profiles.merges(laptop)
    assert merge["kind"] == "merge" and merge["survivor_id"] == laptop and merge["merged_id"] == phone
    assert merge["reason"] == "identifier" and merge["details"]["type"] == "anonymous_id"
    assert fresh_db.profiles.get(laptop)["merged_ids"] == [phone]


def test_shared_device_does_not_merge_users(fresh_db: CDP, write_key: str) -> None:
    send(
        fresh_db,
        write_key,
        {"type": "identify", "anonymousId": "ipad", "userId": "alice", "messageId": "1"},
        {"type": "identify", "anonymousId": "ipad", "userId": "bob", "messageId": "2"},
        {"type": "track", "anonymousId": "ipad", "userId": "bob", "event": "Order Completed", "messageId": "3"},
    )
    alice, bob = profile_of(fresh_db, user_id="alice"), profile_of(fresh_db, user_id="bob")
    assert alice != bob
    assert event_profiles(fresh_db)["3"] == bob
    conflicts = fresh_db.profiles.conflicts().data
    assert conflicts and conflicts[0]["rule"] == "limit:user_id"
    assert conflicts[0]["identifier"] == {"type": "anonymous_id", "value": "ipad"}
    # Seen with more people, the device id is marked shared and stops linking.
    for user in ("carol", "dave"):
        send(fresh_db, write_key, {"type": "identify", "anonymousId": "ipad", "userId": user})
    shared = fresh_db.profiles.identities(alice)["identifiers"]
    assert {k: v for k, v in next(i for i in shared if i["value"] == "ipad").items() if k != "first_seen"} == {
        "type": "anonymous_id",
        "value": "ipad",
        "shared": True,
    }
    assert len({profile_of(fresh_db, user_id=u) for u in ("alice", "bob", "carol", "dave")}) == 4


def test_crm_record_joins_web_user_by_email(fresh_db: CDP, write_key: str) -> None:
    send(fresh_db, write_key, {"type": "identify", "userId": "u1", "traits": {"email": "jo@x.com", "firstName": "Jo"}})
    fresh_db.ingest.upsert_records(
        [
            {
                "source": "salesforce",
                "external_id": "003A",
                "email": "JO@X.COM",
                "first_name": "Joanna",
                "phone": "(415) 555-0134",
            }
        ]
    )
    pid = profile_of(fresh_db, user_id="u1")
    assert profile_of(fresh_db, source="salesforce", external_id="003A") == pid
    assert profile_of(fresh_db, phone="+1 415 555 0134") == pid
    record = fresh_db.store.query("SELECT profile_id FROM source_records")[0]
    assert record["profile_id"] == pid


def test_household_sharing_a_phone_stays_apart(fresh_db: CDP) -> None:
    fresh_db.ingest.upsert_records(
        [
            {
                "source": "crm",
                "external_id": "1",
                "first_name": "Maria",
                "last_name": "Garcia",
                "phone": "+1 617 555 0100",
                "birthday": "1980-01-02",
            },
            {
                "source": "crm",
                "external_id": "2",
                "first_name": "Luis",
                "last_name": "Garcia",
                "phone": "+1 617 555 0100",
                "birthday": "1979-05-06",
            },
        ]
    )
    one = profile_of(fresh_db, source="crm", external_id="1")
    two = profile_of(fresh_db, source="crm", external_id="2")
    assert one != two
    assert fresh_db.profiles.conflicts().data[0]["rule"] in ("attribute:birthday", "attribute:first_name")


def test_nickname_with_same_email_merges(fresh_db: CDP) -> None:
    fresh_db.ingest.upsert_records(
        [
            {"source": "salesforce", "external_id": "1", "first_name": "Jonathan", "email": "js@x.com"},
            {"source": "hubspot", "external_id": "9", "first_name": "Jon", "email": "js@x.com"},
        ]
    )
    assert profile_of(fresh_db, source="salesforce", external_id="1") == profile_of(
        fresh_db, source="hubspot", external_id="9"
    )


def test_first_name_guard_relates_the_published_nicknames(fresh_db: CDP) -> None:
    fresh_db.ingest.upsert_records(
        [
            {"source": "salesforce", "external_id": "1", "first_name": "Eugene", "email": "gm@x.com"},
            {"source": "hubspot", "external_id": "9", "first_name": "Gene", "email": "gm@x.com"},
            {"source": "salesforce", "external_id": "2", "first_name": "Robert", "email": "family@x.com"},
            {"source": "hubspot", "external_id": "8", "first_name": "William", "email": "family@x.com"},
        ]
    )
    assert profile_of(fresh_db, source="salesforce", external_id="1") == profile_of(
        fresh_db, source="hubspot", external_id="9"
    )
    assert profile_of(fresh_db, source="salesforce", external_id="2") != profile_of(
        fresh_db, source="hubspot", external_id="8"
    )  # both may be called Bill; still two first names


def test_alias_joins_previous_id(fresh_db: CDP, write_key: str) -> None:
    send(
        fresh_db,
        write_key,
        {"type": "track", "anonymousId": "anon-x", "event": "Viewed", "messageId": "v"},
        {"type": "track", "userId": "old-user", "event": "Viewed", "messageId": "w"},
        {"type": "alias", "previousId": "anon-x", "userId": "new-user", "messageId": "a1"},
        {"type": "alias", "previousId": "old-user", "userId": "new-user", "messageId": "a2"},
    )
    pid = profile_of(fresh_db, user_id="new-user")
    assert profile_of(fresh_db, anonymous_id="anon-x") == pid == profile_of(fresh_db, user_id="old-user")
    assert {m["reason"] for m in fresh_db.profiles.merges(pid)} == {"alias"}


def test_blocked_values_never_link(fresh_db: CDP, write_key: str) -> None:
    send(
        fresh_db,
        write_key,
        {"type": "identify", "userId": "u1", "traits": {"email": "test@test.com"}},
        {"type": "identify", "userId": "u2", "traits": {"email": "test@test.com"}},
        {"type": "track", "userId": "undefined", "anonymousId": "a-7", "event": "X", "messageId": "blocked"},
    )
    assert profile_of(fresh_db, user_id="u1") != profile_of(fresh_db, user_id="u2")
    assert count(fresh_db, "identifiers", "value = ?", ("test@test.com",)) == 0
    assert event_profiles(fresh_db)["blocked"] == profile_of(fresh_db, anonymous_id="a-7")


def test_limits_are_settings(tmp_path: Any) -> None:
    settings = Settings(db=tmp_path / "x.db", identity_limits={"user_id": 2})
    with CDP(settings) as cdp:
        _, key = cdp.keys.create("write")
        send(
            cdp,
            key,
            {"type": "identify", "anonymousId": "d", "userId": "a"},
            {"type": "identify", "anonymousId": "d", "userId": "b"},
        )
        assert profile_of(cdp, user_id="a") == profile_of(cdp, user_id="b")


def test_unified_and_computed_traits(fresh_db: CDP, write_key: str) -> None:
    fresh_db.ingest.upsert_records(
        [
            {
                "source": "salesforce",
                "external_id": "1",
                "email": "k@x.com",
                "first_name": "Katherine",
                "address": {"city": "Boston"},
                "Tier": "gold",
            }
        ]
    )
    send(
        fresh_db,
        write_key,
        {
            "type": "identify",
            "userId": "k",
            "traits": {"email": "k@x.com", "firstName": "Kate", "plan": "pro"},
            "timestamp": "2026-01-01T00:00:00Z",
        },
        {
            "type": "track",
            "userId": "k",
            "event": "Order Completed",
            "properties": {"revenue": 100},
            "timestamp": "2026-01-02T00:00:00Z",
        },
        {
            "type": "track",
            "userId": "k",
            "event": "Order Completed",
            "properties": {"revenue": 50.5},
            "timestamp": "2026-01-03T00:00:00Z",
        },
        {"type": "track", "userId": "k", "event": "Product Viewed", "timestamp": "2026-01-01T12:00:00Z"},
    )
    profile = fresh_db.profiles.get(profile_of(fresh_db, user_id="k"))
    traits = profile["traits"]
    assert traits["email"] == "k@x.com" and traits["plan"] == "pro" and traits["Tier"] == "gold"
    assert traits["address"] == {"city": "Boston"}
    assert traits["first_name"] == "Katherine"  # the CRM row was written after the (historical) identify
    computed = profile["computed"]
    assert computed["order_count"] == 2 and computed["total_revenue"] == 150.5
    assert computed["average_order_value"] == 75.25
    assert computed["event_counts"] == {"Order Completed": 2, "Product Viewed": 1}
    assert computed["first_seen"] == "2026-01-01T00:00:00.000Z"
    assert computed["last_order_at"] == "2026-01-03T00:00:00.000Z"
    assert computed["rfm"]["frequency"] == 2 and computed["rfm"]["monetary"] == 150.5
    assert {"type": "record", "value": "salesforce:1"} in profile["identifiers"]
    # The batched form (what a resolution run uses) gives the same rows; profiles without events: none.
    from cdp.identity.traits import computed_rows
    from cdp.timeutil import utcnow

    now, conn = utcnow(), fresh_db.store.reader()
    assert computed_rows(conn, now, [profile["id"], "no-such-profile"]) == computed_rows(conn, now, profile["id"])

    settings = fresh_db.settings.model_copy(update={"trait_priority": {"first_name": ["web"]}})
    from cdp.profiles import Profiles

    assert Profiles(fresh_db.store, settings).get(profile["id"])["traits"]["first_name"] == "Kate"


def test_profile_api(server: LiveServer, write_key: str, read_key: str) -> None:
    send(
        server.cdp,
        write_key,
        *[
            {
                "type": "track",
                "userId": "u1",
                "anonymousId": "a1",
                "event": f"E{i}",
                "messageId": f"m{i}",
                "timestamp": f"2026-02-{i + 1:02d}T00:00:00Z",
            }
            for i in range(7)
        ],
    )
    pid = profile_of(server.cdp, user_id="u1")
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        body = client.get(f"/v1/profiles/{pid}").json()
        assert set(body) >= {"id", "traits", "computed", "identifiers", "created_at", "updated_at"}
        assert client.get("/v1/profiles/lookup", params={"user_id": "u1"}).json()["id"] == pid
        missing = client.get("/v1/profiles/prof_nope")
        assert missing.status_code == 404 and "prof_nope" in missing.json()["message"]
        assert client.get("/v1/profiles/lookup", params={"email": "no@one.com"}).status_code == 404
        assert client.get("/v1/profiles/lookup").status_code == 400
        assert client.get("/v1/profiles/lookup", params={"source": "crm"}).status_code == 400
        seen, cursor = [], None
        while True:
            page = client.get(
                f"/v1/profiles/{pid}/events", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [e["event"] for e in page["data"]]
            cursor = page["cursor"]["next"]
            if not cursor:
                break
        assert seen == [f"E{i}" for i in reversed(range(7))]
        filtered = client.get(f"/v1/profiles/{pid}/events", params={"event": "E3"}).json()["data"]
        assert [e["messageId"] for e in filtered] == ["m3"]
        identities = client.get(f"/v1/profiles/{pid}/identities").json()
        assert {i["type"] for i in identities["identifiers"]} == {"user_id", "anonymous_id"}
        explain = client.get(f"/v1/profiles/{pid}/explain").json()
        assert explain["edges"][0]["kind"] == "identifier"
        assert {explain["edges"][0]["from"]["type"], explain["edges"][0]["to"]["type"]} == {"user_id", "anonymous_id"}
        assert client.get(f"/v1/profiles/{pid}/merges").json()["data"] == []
        assert client.get("/v1/identity/conflicts").json()["data"] == []
    assert httpx.get(f"{server.url}/v1/profiles/{pid}").status_code == 401


def test_unknown_profile_error() -> None:
    with pytest.raises(UnknownProfile):
        raise UnknownProfile("x")
