"""GET /v1/profiles: list and search (prefix of a name, email, phone or any identifier), by segment, most
recently seen first, with cursor pagination; the library's ``cdp.profiles.search`` underneath."""

from __future__ import annotations

from typing import Any

from cdp import CDP
from tests.conftest import LiveServer


def _seed(cdp: CDP, write_key: str) -> None:
    cdp.ingest.batch(
        {
            "batch": [
                {"type": "identify", "userId": "u-ada", "messageId": "m1", "timestamp": "2026-01-01T00:00:00Z",
                 "traits": {"email": "Ada@Example.com", "first_name": "Ada", "phone": "+44 20 7946 0958"}},
                {"type": "identify", "userId": "u-grace", "messageId": "m2", "timestamp": "2026-01-02T00:00:00Z",
                 "traits": {"email": "grace@navy.mil", "first_name": "Grace"}},
                {"type": "track", "anonymousId": "anon-7", "event": "Viewed", "messageId": "m3",
                 "timestamp": "2026-01-03T00:00:00Z"},
            ]
        },
        write_key=write_key,
    )  # fmt: skip
    cdp.ingest.records_body(
        b'[{"source": "crm", "external_id": "c-1", "first_name": "Alan", "last_name": "Turing",'
        b' "email": "alan@example.org"}]'
    )


def _ids(client: Any, **params: Any) -> list[str]:
    response = client.get("/v1/profiles", params=params)
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["data"]]


def test_search_by_prefix_of_identifier_name_email_phone(server: LiveServer, write_key: str, read_key: str) -> None:
    cdp = server.cdp
    _seed(cdp, write_key)
    ada = cdp.profiles.lookup_id(user_id="u-ada")
    grace = cdp.profiles.lookup_id(user_id="u-grace")
    anon = cdp.profiles.lookup_id(anonymous_id="anon-7")
    alan = cdp.profiles.lookup_id(source="crm", external_id="c-1")
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        everyone = client.get("/v1/profiles").json()
        assert set(everyone) == {"data", "cursor"} and everyone["cursor"] == {"next": None, "has_more": False}
        assert {p["id"] for p in everyone["data"]} == {ada, grace, anon, alan}
        first = everyone["data"][0]
        assert set(first) >= {"id", "traits", "identifiers", "created_at", "updated_at"}
        seen = [p["updated_at"] for p in everyone["data"]]
        assert seen == sorted(seen, reverse=True)  # most recently seen first
        assert _ids(client, q="ADA@ex") == [ada]  # emails case-insensitively
        assert _ids(client, q="u-gr") == [grace]  # user_id
        assert _ids(client, q="anon") == [anon]  # anonymous_id
        assert _ids(client, q="+44 20 79") == [ada]  # a phone as typed
        assert _ids(client, q="4420") == [ada]  # digits without the +
        assert _ids(client, q="tur") == [alan]  # a CRM record's last name
        assert _ids(client, q="alan t") == [alan]  # full name
        assert _ids(client, q="c-1") == [alan]  # external id
        assert _ids(client, q="crm:c") == [alan]  # the record identifier
        assert _ids(client, q="zzz") == []
        assert _ids(client, q="a%") == []  # LIKE wildcards are literal
        assert set(_ids(client, q="a")) == {ada, alan, anon}


def test_pagination_and_segment_filter(server: LiveServer, write_key: str, read_key: str, admin_key: str) -> None:
    cdp = server.cdp
    _seed(cdp, write_key)
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        pages, cursor = [], None
        while True:
            body = client.get("/v1/profiles", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
            pages.append([p["id"] for p in body["data"]])
            cursor = body["cursor"]["next"]
            assert body["cursor"]["has_more"] is (cursor is not None)
            if cursor is None:
                break
        flat = [pid for page in pages for pid in page]
        assert len(flat) == len(set(flat)) == 4 and all(len(p) == 1 for p in pages)
        assert flat == _ids(client)
        assert client.get("/v1/profiles", params={"cursor": "nonsense"}).status_code == 400

        admin = {"Authorization": f"Bearer {admin_key}"}
        rule = {"trait": "email", "op": "starts_with", "value": "grace"}
        created = client.post("/v1/segments", json={"key": "graces", "name": "Graces", "rule": rule}, headers=admin)
        assert created.status_code in (200, 201), created.text
        assert client.post("/v1/segments/graces/compute", headers=admin).status_code == 200
        assert _ids(client, segment="graces") == [cdp.profiles.lookup_id(user_id="u-grace")]
        assert _ids(client, segment="graces", q="ada") == []
        missing = client.get("/v1/profiles", params={"segment": "nope"})
        assert missing.status_code == 404 and missing.json()["code"] == "unknown_segment"
        assert client.get("/v1/profiles", headers={"Authorization": f"Bearer {write_key}"}).status_code == 403
        assert client.get("/v1/profiles", headers={"Authorization": ""}).status_code == 401
