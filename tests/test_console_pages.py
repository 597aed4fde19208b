"""Console pages over HTTP (a real server, a real store): the builder's form and errors, timelines and their
filters, quality samples, the identity page without a model, webhook errors, and charts as text alternatives."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import LiveServer, count
from tests.console_helpers import HTML, sign_in


@pytest.fixture
def store(server: LiveServer, write_key: str) -> LiveServer:
    with server.client() as client:
        batch = [
            {"type": "identify", "userId": "u1", "traits": {"first_name": "Grace", "email": "grace@example.com"}},
            *[
                {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 20 + n}}
                for n in range(30)
            ],
            {"type": "track", "userId": "u1", "event": "Signed Up"},
            {"type": "identify", "userId": "u2", "traits": {"email": "not-an-email"}},
        ]
        assert client.post("/v1/batch", json={"batch": batch}, auth=(write_key, "")).status_code == 200
    return server


def test_builder_adds_conditions_from_the_form_and_previews(store: LiveServer, admin_key: str) -> None:
    with store.client() as client:
        csrf = sign_in(client, admin_key)
        definition = json.dumps({"key": "loyal", "name": "Loyal", "rule": {"event": "Signed Up"}})
        page = client.post(
            "/console/segments/builder",
            data={
                "csrf_token": csrf,
                "definition": definition,
                "action": "add",
                "cond_kind": "event",
                "cond_event": "Order Completed",
                "cond_within": "30d",
                "cond_count": "25",
            },
            headers=HTML,
        )
        assert page.status_code == 200
        text = re.search(r"<textarea[^>]*>(.*?)</textarea>", page.text, re.S)
        assert text
        rule = json.loads(text.group(1).replace("&#34;", '"').replace("&quot;", '"'))["rule"]
        assert rule == {
            "all": [
                {"event": "Signed Up"},
                {"event": "Order Completed", "within": "30d", "count": {"op": "gte", "value": 25}},
            ]
        }
        assert 'data-size="1"' in page.text  # u1 ordered 30 times; u2 never
        # "did not": a not around the event condition (everyone who signed up also ordered: nobody).
        negated = client.post(
            "/console/segments/builder",
            data={
                "csrf_token": csrf,
                "definition": json.dumps({"name": "x", "rule": {"event": "Signed Up"}}),
                "action": "add",
                "cond_kind": "event",
                "cond_event": "Order Completed",
                "cond_negate": "1",
            },
            headers=HTML,
        )
        assert 'data-size="0"' in negated.text and "&#34;not&#34;" in negated.text


def test_builder_shows_schema_errors_where_they_are_and_saves_nothing(store: LiveServer, admin_key: str) -> None:
    with store.client() as client:
        csrf = sign_in(client, admin_key)
        bad = {"key": "bad", "name": "Bad", "rule": {"trait": "plan", "op": "almost", "value": 1}}
        page = client.post(
            "/console/segments/builder",
            data={"csrf_token": csrf, "definition": json.dumps(bad), "action": "save"},
            headers=HTML,
        )
        assert page.status_code == 400 and 'role="alert"' in page.text and "almost" in page.text
        assert count(store.cdp, "segments") == 0
        broken = client.post(
            "/console/segments/builder", data={"csrf_token": csrf, "definition": "{not json"}, headers=HTML
        )
        assert broken.status_code == 400 and "not valid JSON" in broken.text
        assert "{not json" in broken.text  # the text the user typed is kept


def test_timeline_pages_and_filters(store: LiveServer, read_key: str) -> None:
    pid = store.cdp.profiles.lookup_id(user_id="u1")
    with store.client() as client:
        sign_in(client, read_key)
        first = client.get(f"/console/people/{pid}", headers=HTML)
        assert first.status_code == 200 and "Older events" in first.text
        older = re.search(r'href="\?([^"]*cursor=[^"#]+)#timeline"', first.text)
        assert older
        second = client.get(f"/console/people/{pid}?{older.group(1).replace('&amp;', '&')}", headers=HTML)
        assert second.status_code == 200 and second.text.count("Order Completed") >= 1
        only = client.get(f"/console/people/{pid}", params={"event": "Signed Up"}, headers=HTML)
        timeline = only.text.split('id="h-timeline"')[1].split("</section>")[0]
        assert "Signed Up" in timeline and "Order Completed" not in timeline
        bad = client.get(f"/console/people/{pid}", params={"since": "yesterday-ish"}, headers=HTML)
        assert bad.status_code == 200 and "since must be an ISO-8601 time" in bad.text


def test_quality_counts_link_to_the_flagged_events(store: LiveServer, read_key: str) -> None:
    with store.client() as client:
        sign_in(client, read_key)
        quality = client.get("/console/quality", headers=HTML)
        links = re.findall(r'href="(/console/quality/samples\?[^"]+)"', quality.text)
        assert links, quality.text
        samples = client.get(links[0].replace("&amp;", "&"), headers=HTML)
        # The flagged message itself (ingest keeps no invalid value: the field is stored empty, and flagged).
        assert samples.status_code == 200 and "invalid:traits.email" in samples.text
        rows = samples.text.split("<tbody>")[1]
        assert "<td>u2</td>" in rows and "<td>u1</td>" not in rows
        wrong = client.get("/console/quality/samples", params={"source": "x", "kind": "files"}, headers=HTML)
        assert wrong.status_code == 400 and "kind must be events or records" in wrong.text


def test_identity_page_without_a_model_says_how_to_get_one(store: LiveServer, read_key: str) -> None:
    with store.client() as client:
        sign_in(client, read_key)
        page = client.get("/console/identity", headers=HTML)
        assert page.status_code == 200 and "cdp resolve" in page.text
        assert '<a href="/console/identity/review">Review queue</a>' in page.text
        assert '<a href="/console/privacy">Privacy requests</a>' in page.text


def test_webhook_errors_are_shown_and_nothing_is_stored(store: LiveServer, admin_key: str) -> None:
    with store.client() as client:
        csrf = sign_in(client, admin_key)
        page = client.post(
            "/console/webhooks",
            data={"csrf_token": csrf, "url": "ftp://example.com/x", "event_segment.entered": "1"},
            headers=HTML,
        )
        assert page.status_code == 400 and 'role="alert"' in page.text
        assert count(store.cdp, "webhook_endpoints") == 0


def test_segment_list_sparklines_and_size_chart_describe_themselves(store: LiveServer, admin_key: str) -> None:
    store.cdp.segments.create({"key": "buyers", "name": "Buyers", "rule": {"event": "Order Completed"}})
    for _ in range(2):
        store.cdp.segments.compute("buyers")
    with store.client() as client:
        sign_in(client, admin_key)
        listing = client.get("/console/segments", headers=HTML)
        assert 'aria-label="size of Buyers over its last 2 runs"' in listing.text
        page = client.get("/console/segments/buyers", headers=HTML)
        label = re.search(r'<svg[^>]*role="img" aria-label="(size over 2 runs[^"]*)"', page.text)
        assert label and "1 entries and 0 exits" in label.group(1)


@pytest.mark.slow
def test_machine_learned_segments_show_their_model(server: LiveServer, write_key: str, read_key: str) -> None:
    from tests.test_ml import LIKELY_BUYERS, PERSONAS_SEGMENT, planted_clusters, planted_purchases

    cdp = server.cdp
    planted_clusters(cdp, write_key)
    cdp.segments.create(PERSONAS_SEGMENT)
    cdp.segments.compute(PERSONAS_SEGMENT["key"])
    planted_purchases(cdp, write_key)
    cdp.segments.create(LIKELY_BUYERS)
    cdp.segments.compute(LIKELY_BUYERS["key"])
    with server.client() as client:
        sign_in(client, read_key)
        personas = client.get(f"/console/segments/{PERSONAS_SEGMENT['key']}", headers=HTML)
        assert personas.status_code == 200 and 'src="data:image/png;base64,' in personas.text
        clusters = cdp.segments.list(parent=PERSONAS_SEGMENT["key"]).data
        assert len(clusters) >= 2 and all(c["name"] in personas.text for c in clusters)
        assert "Silhouette" in personas.text
        buyers = client.get(f"/console/segments/{LIKELY_BUYERS['key']}", headers=HTML)
        auc = cdp.segments.model(LIKELY_BUYERS["key"])["metrics"]["auc"]
        assert f"Holdout AUC <strong>{auc}</strong>" in buyers.text
        assert 'aria-label="calibration, predicted against observed' in buyers.text
        assert "Top features" in buyers.text
