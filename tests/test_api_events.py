"""GET /v1/events and GET /v1/quality: auth, filters, cursor pagination."""

from __future__ import annotations

import httpx

from cdp import CDP
from tests.conftest import LiveServer


def _seed(cdp: CDP, key: str) -> None:
    batch = []
    for i in range(25):
        batch.append(
            {
                "type": "track",
                "userId": f"u{i % 3}",
                "event": "Viewed" if i % 2 else "Clicked",
                "messageId": f"m{i:02d}",
                "timestamp": f"2026-01-{i + 1:02d}T00:00:00Z",
            }
        )
    batch.append(
        {
            "type": "page",
            "anonymousId": "anon-9",
            "name": "Home",
            "messageId": "p1",
            "timestamp": "2026-02-01T00:00:00Z",
        }
    )
    cdp.ingest.batch({"batch": batch}, write_key=key)


def test_events_need_a_read_token(server: LiveServer, write_key: str, read_key: str, admin_key: str) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v1/events").status_code == 401
        assert client.get("/v1/events", headers={"Authorization": f"Bearer {write_key}"}).status_code == 403
        assert client.get("/v1/events", headers={"Authorization": f"Bearer {read_key}"}).status_code == 200
        assert client.get("/v1/events", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
        assert client.get("/v1/events", auth=(read_key, "")).status_code == 200  # Basic, as Segment's Profile API
        assert client.get("/v1/quality", headers={"Authorization": f"Bearer {read_key}"}).status_code == 200
        assert client.get("/v1/quality").status_code == 401


def test_filters_and_pagination(server: LiveServer, write_key: str, read_key: str) -> None:
    _seed(server.cdp, write_key)
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            body = client.get("/v1/events", params=params).json()
            seen += [e["messageId"] for e in body["data"]]
            pages += 1
            if not body["cursor"]["has_more"]:
                assert body["cursor"]["next"] is None
                break
            cursor = body["cursor"]["next"]
        assert pages == 3 and len(seen) == 26 and len(set(seen)) == 26
        assert seen[0] == "p1" and seen[-1] == "m00"  # newest first

        u1 = client.get("/v1/events", params={"user_id": "u1"}).json()["data"]
        assert {e["userId"] for e in u1} == {"u1"} and len(u1) == 8
        viewed = client.get("/v1/events", params={"event": "Viewed", "user_id": "u1"}).json()["data"]
        assert all(e["event"] == "Viewed" for e in viewed) and len(viewed) == 4
        anon = client.get("/v1/events", params={"anonymous_id": "anon-9"}).json()["data"]
        assert [(e["type"], e["name"]) for e in anon] == [("page", "Home")]
        since = client.get("/v1/events", params={"since": "2026-01-20T00:00:00+00:00"}).json()["data"]
        assert len(since) == 7

        for params, field in [
            ({"limit": 0}, "limit"),
            ({"limit": 5000}, "limit"),
            ({"since": "soon"}, "since"),
            ({"cursor": "!!!"}, "cursor"),
        ]:
            response = client.get("/v1/events", params=params)
            assert response.status_code == 400, params
            body = response.json()
            assert body["code"] in ("invalid_request", "invalid_input", "invalid_cursor")
            assert field in body["message"] or field in str(body.get("details"))


def test_healthz(server: LiveServer) -> None:
    body = httpx.get(f"{server.url}/healthz").json()
    assert body["status"] == "ok" and body["scheduler"] == "off"
