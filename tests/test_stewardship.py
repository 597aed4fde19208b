"""Manual merge, split and undo of profiles: everything follows and comes back, the next run keeps them,
subscribers hear of them (verified with ``standardwebhooks``), and the API refuses bad input clearly."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from cdp import CDP
from cdp.settings import Settings
from tests.conftest import LiveServer
from tests.test_webhooks import Receiver, receiver, webhook_settings  # noqa: F401

PRO = {"key": "pro", "name": "Pro plan", "rule": {"trait": "plan", "op": "eq", "value": "pro"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return webhook_settings(tmp_path)


def seed(cdp: CDP, key: str) -> tuple[str, str]:
    """Two people, each with identify and track events, a CRM record and traits; Ann is on the pro plan."""
    batch = []
    for user, email, first, plan in (("ua", "ann@x.com", "Ann", "pro"), ("ub", "bob@y.com", "Bob", "free")):
        batch.append(
            {"type": "identify", "userId": user, "messageId": f"i-{user}",
             "traits": {"email": email, "first_name": first, "plan": plan}}
        )  # fmt: skip
        batch += [
            {"type": "track", "userId": user, "event": "Order Completed", "messageId": f"t{i}-{user}",
             "properties": {"revenue": 10 * (i + 1)}}
            for i in range(3)
        ]  # fmt: skip
    batch.append({"type": "group", "userId": "ub", "groupId": "acme-corp", "messageId": "g-ub"})
    cdp.ingest.batch({"batch": batch}, write_key=key)
    cdp.ingest.upsert_records(
        [
            {"source": "crm", "external_id": "1", "email": "ann@x.com", "first_name": "Ann", "company": "Acme"},
            {"source": "crm", "external_id": "2", "email": "bob@y.com", "first_name": "Bob", "title": "CTO"},
        ]
    )
    cdp.segments.create(PRO)
    cdp.identity.refresh_traits()
    cdp.segments.compute("pro")
    return cdp.profiles.lookup_id(user_id="ua"), cdp.profiles.lookup_id(user_id="ub")


def export(cdp: CDP, pid: str) -> dict[str, Any]:
    """What a profile holds, without its id: records, events, identifiers, memberships, traits."""
    conn = cdp.store.reader()
    profile = cdp.profiles.get(pid)
    return {
        "records": sorted(conn.execute("SELECT source, external_id FROM source_records WHERE profile_id = ?", (pid,))),
        "events": sorted(r[0] for r in conn.execute("SELECT message_id FROM events WHERE profile_id = ?", (pid,))),
        "identifiers": sorted((i["type"], i["value"]) for i in profile["identifiers"]),
        "segments": sorted(r[0] for r in conn.execute("SELECT segment_key FROM memberships WHERE profile_id = ?",
                                                      (pid,))),
        "groups": sorted(
            r[0] for r in conn.execute("SELECT group_id FROM profile_groups WHERE profile_id = ?", (pid,))
        ),
        "traits": profile["traits"],
        "computed": profile["computed"],
    }  # fmt: skip


def test_manual_merge_then_split_returns_everything_where_it_was(fresh_db: CDP, write_key: str) -> None:
    ann, bob = seed(fresh_db, write_key)
    before = {ann: export(fresh_db, ann), bob: export(fresh_db, bob)}
    assert before[ann]["segments"] == ["pro"] and len(before[bob]["events"]) == 5
    assert before[bob]["groups"] == ["acme-corp"] and before[ann]["groups"] == []
    assert before[bob]["computed"] and before[ann]["traits"]["company"] == "Acme"

    merged = fresh_db.stewardship.merge(bob, ann, note="same household account", key_id="k_test")
    survivor = merged["profile_id"]
    assert survivor == ann and merged["merged_id"] == bob  # the older profile survives
    together = export(fresh_db, survivor)
    assert together["events"] == sorted(before[ann]["events"] + before[bob]["events"])
    assert together["records"] == [("crm", "1"), ("crm", "2")]
    # memberships follow the merged traits at once (the most recent plan wins)
    assert together["segments"] == (["pro"] if together["traits"]["plan"] == "pro" else [])
    assert fresh_db.profiles.live_id(bob) == ann
    history = fresh_db.profiles.merges(ann)
    assert history[-1]["reason"] == "manual" and history[-1]["details"]["note"] == "same household account"
    assert history[-1]["details"]["by"] == "k_test"
    label = fresh_db.labels.all()[-1]
    assert (label["decision"], label["origin"], label["key_id"]) == ("match", "merge", "k_test")

    split = fresh_db.stewardship.split(
        ann,
        [{"source": "crm", "external_id": "2"}],
        [{"type": "user_id", "value": "ub"}, {"type": "email", "value": " Bob@Y.com "}],
        note="not the same person after all",
        key_id="k_test",
    )
    new = split["new_profile_id"]
    assert split["profile_id"] == ann and new not in (ann, bob)
    assert export(fresh_db, ann) == before[ann]
    assert export(fresh_db, new) == before[bob]
    assert fresh_db.profiles.merges(new)[-1]["reason"] == "manual"
    # the next full run keeps both decisions: the split stays split
    fresh_db.identity.run()
    assert export(fresh_db, fresh_db.profiles.lookup_id(user_id="ua")) == before[ann]
    assert export(fresh_db, fresh_db.profiles.lookup_id(user_id="ub")) == before[bob]


def test_undo_restores_the_ids_and_a_run_keeps_a_manual_merge(fresh_db: CDP, write_key: str) -> None:
    ann, bob = seed(fresh_db, write_key)
    before = {ann: export(fresh_db, ann), bob: export(fresh_db, bob)}
    fresh_db.stewardship.merge(ann, bob, key_id="k1")
    undone = fresh_db.stewardship.undo(bob, key_id="k1")  # the merged-away id names the survivor's last action
    assert undone["kind"] == "unmerge" and undone["other_id"] == bob
    assert fresh_db.profiles.live_id(bob) == bob
    assert export(fresh_db, ann) == before[ann] and export(fresh_db, bob) == before[bob]
    assert fresh_db.labels.all() == []  # the must-link went with the merge
    with pytest.raises(Exception, match="no manual merge or split"):
        fresh_db.stewardship.undo(ann)

    # a manual merge of two people the data does not link survives full runs
    fresh_db.stewardship.merge(ann, bob, key_id="k1")
    fresh_db.identity.run()
    fresh_db.identity.run()
    assert fresh_db.profiles.lookup_id(user_id="ub") == fresh_db.profiles.lookup_id(user_id="ua") == ann
    # split, undo the split: one profile again
    bob_ids = [{"type": "user_id", "value": "ub"}, {"type": "email", "value": "bob@y.com"}]
    split = fresh_db.stewardship.split(ann, [{"source": "crm", "external_id": "2"}], bob_ids)
    assert fresh_db.profiles.lookup_id(user_id="ub") == split["new_profile_id"]
    assert fresh_db.stewardship.undo(ann)["kind"] == "unsplit"
    assert fresh_db.profiles.lookup_id(user_id="ub") == ann
    fresh_db.identity.run()
    assert fresh_db.profiles.lookup_id(user_id="ub") == ann


def test_bad_manual_actions_are_refused_and_change_nothing(fresh_db: CDP, write_key: str) -> None:
    ann, bob = seed(fresh_db, write_key)
    before = {ann: export(fresh_db, ann), bob: export(fresh_db, bob)}
    from cdp.errors import CDPError

    cases: list[tuple[Any, str]] = [
        (lambda: fresh_db.stewardship.merge(ann, ann), "already one profile"),
        (lambda: fresh_db.stewardship.merge(ann, "prof_nope"), "no profile with id"),
        (lambda: fresh_db.stewardship.split(ann, [{"source": "crm", "external_id": "2"}]), "not an identifier of"),
        (lambda: fresh_db.stewardship.split(ann, [], []), "at least one record or identifier"),
        (lambda: fresh_db.stewardship.split(ann, [{"source": "crm"}]), r"records\[0\]"),
        (lambda: fresh_db.stewardship.split(ann, [], [{"type": "shoe", "value": "9"}]), r"identifiers\[0\].type"),
    ]
    everything = [("user_id", "ua"), ("email", "ann@x.com"), ("record", "crm:1")]
    cases.append(
        (lambda: fresh_db.stewardship.split(ann, [], [{"type": t, "value": v} for t, v in everything]), "at least one")
    )
    for action, message in cases:
        with pytest.raises(CDPError, match=message) as caught:
            action()
        assert 400 <= caught.value.status < 500
    assert export(fresh_db, ann) == before[ann] and export(fresh_db, bob) == before[bob]


def test_api_merge_split_and_webhooks_verified(
    server: LiveServer,
    admin_key: str,
    read_key: str,
    write_key: str,
    receiver: Receiver,  # noqa: F811
) -> None:
    cdp = server.cdp
    ann, bob = seed(cdp, write_key)
    admin = {"Authorization": f"Bearer {admin_key}"}
    with server.client(headers=admin) as http:
        hook = http.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["profile.merged", "profile.split"], "segments": None}
        ).json()
        receiver.secrets = [hook["secret"]]
        cdp.webhooks.start()
        with server.client(headers={"Authorization": f"Bearer {read_key}"}) as reader:
            refused = reader.post(f"/v1/profiles/{ann}/merge", json={"other": bob})
            assert refused.status_code == 403
        bad = http.post(f"/v1/profiles/{ann}/merge", json={"other": bob, "colour": "red"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
        missing = http.post(f"/v1/profiles/{ann}/merge", json={"other": "prof_missing"})
        assert missing.status_code == 404 and missing.json()["details"]["field"] == "other"
        merged = http.post(f"/v1/profiles/{ann}/merge", json={"other": bob, "note": "dup"})
        assert merged.status_code == 200, merged.text
        assert merged.json()["profile_id"] == ann
        again = http.post(f"/v1/profiles/{ann}/merge", json={"other": bob})
        assert again.status_code == 409 and again.json()["code"] == "stewardship_refused"
        merges = http.get(f"/v1/profiles/{ann}/merges").json()["data"]
        assert merges[-1]["reason"] == "manual" and merges[-1]["merged_id"] == bob
        wrong = http.post(f"/v1/profiles/{ann}/split", json={"records": [{"source": "crm", "external_id": "9"}]})
        assert wrong.status_code == 400 and wrong.json()["details"]["field"] == "records[0]"
        split = http.post(
            f"/v1/profiles/{ann}/split",
            json={"records": [{"source": "crm", "external_id": "2"}],
                  "identifiers": [{"type": "user_id", "value": "ub"}, {"type": "email", "value": "bob@y.com"}],
                  "note": "two people"},
        )  # fmt: skip
        assert split.status_code == 200, split.text
        new = split.json()["new_profile_id"]
        assert http.get(f"/v1/profiles/{new}").json()["traits"]["first_name"] == "Bob"
        assert http.get(f"/v1/profiles/{ann}/merges").json()["data"][-1]["reason"] == "manual"
        undo = http.post(f"/v1/profiles/{new}/undo")
        assert undo.status_code == 200 and undo.json()["kind"] == "unsplit"
        undo = http.post(f"/v1/profiles/{new}/undo", json={"note": "walk back"})  # then the merge before it
        assert undo.status_code == 200 and undo.json()["kind"] == "unmerge" and undo.json()["other_id"] == bob
        nothing = http.post(f"/v1/profiles/{new}/undo")
        assert nothing.status_code == 404 and nothing.json()["code"] == "nothing_to_undo"
    got = receiver.wait(4)
    assert all(r.verified_by == [0] for r in got)
    kinds = [(r.payload["type"], r.payload["data"]) for r in got]
    assert kinds[0] == ("profile.merged", {**kinds[0][1], "profile": {"id": ann}, "merged_profile_id": bob})
    split_event = next(data for kind, data in kinds if kind == "profile.split")
    assert split_event["profile"] == {"id": ann} and split_event["new_profile_id"] == new
    assert "record:crm:2" in split_event["moved"] and split_event["split_at"]
    # the merge, the split, the undo of the split (a merge), the undo of the merge (a split)
    assert sorted(k for k, _ in kinds) == ["profile.merged", "profile.merged", "profile.split", "profile.split"]


def test_review_and_decisions_work_the_same_with_the_small_store_default_model(fresh_db: CDP, tmp_path: Path) -> None:
    import csv

    from cdp.demo import corpora

    spec = corpora.CORPORA["typos"]
    records, truth = corpora.generate("typos", 400, 11)
    path = tmp_path / "records.csv"
    records.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
    fresh_db.ingest.import_file(path, source=spec.source, id_column=spec.id_column, mapping=dict(spec.mapping))
    fresh_db.identity.run()
    assert fresh_db.identity.describe_model()["kind"] == "default"
    items = fresh_db.review.page(limit=1000).data
    assert items, "the default model leaves doubtful pairs too"
    entity = {
        (str(s), str(e)): str(t) for s, e, t in truth[["source", "external_id", "entity"]].itertuples(index=False)
    }
    for item in items[:10]:
        same = (
            entity[(item["left"]["source"], item["left"]["external_id"])]
            == entity[(item["right"]["source"], item["right"]["external_id"])]
        )
        fresh_db.review.decide(item["id"], "match" if same else "no_match", key_id="k")
    fresh_db.identity.run()
    for label in fresh_db.labels.all():
        sides = []
        for key in (label["left"], label["right"]):
            kind, _, value = key.partition(":")
            found = fresh_db.store.query(
                "SELECT profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value)
            )
            sides.append(fresh_db.profiles.live_id(found[0]["profile_id"]))
        assert (sides[0] == sides[1]) == (label["decision"] == "match"), label


def test_a_split_made_by_a_run_sends_profile_split_too(fresh_db: CDP, write_key: str) -> None:
    ann, _ = seed(fresh_db, write_key)
    # crm:1 stops sharing Ann's email: the next run splits it off with a new id
    fresh_db.ingest.upsert_records([{"source": "crm", "external_id": "1", "email": "ann@new.com", "first_name": "Ann"}])
    assert fresh_db.identity.run()["splits"] == 1
    new = fresh_db.profiles.lookup_id(source="crm", external_id="1")
    rows = fresh_db.store.query("SELECT profile_id, payload FROM outbox WHERE type = 'profile.split'")
    assert len(rows) == 1 and rows[0]["profile_id"] == ann
    import json

    payload = json.loads(rows[0]["payload"])
    assert payload["new_profile_id"] == new and "record:crm:1" in payload["moved"]


def test_a_cannot_link_holds_when_a_shared_identifier_would_merge_at_ingest(fresh_db: CDP, write_key: str) -> None:
    from cdp.identity import labels

    def identify(device: str, email: str) -> None:
        fresh_db.ingest.batch(
            {"batch": [{"type": "identify", "anonymousId": device, "traits": {"email": email}}]}, write_key=write_key
        )

    def profile(device: str) -> str | None:
        return fresh_db.profiles.lookup_id(anonymous_id=device)

    for device in ("ann", "bob", "cid", "dee"):
        identify(f"device-{device}", f"{device}@example.com")
    # Without a label, a device seen with another profile's email links the two profiles ...
    identify("device-cid", "dee@example.com")
    assert profile("device-cid") == profile("device-dee")
    # ... with a cannot-link between them, it does not, and the refusal is recorded as a conflict.
    ann = profile("device-ann")
    fresh_db.store.write(
        lambda conn: labels.write(conn, "anonymous_id:device-ann", "anonymous_id:device-bob", "no_match", "test",
                                  key_id=None)
    )  # fmt: skip
    identify("device-ann", "bob@example.com")
    assert profile("device-ann") == ann != profile("device-bob")
    rules = [c["rule"] for c in fresh_db.profiles.conflicts(limit=100).data]
    assert "cannot_link" in rules


def test_labelled_match_pairs_move_the_m_probabilities_of_the_next_model(fresh_db: CDP, tmp_path: Path) -> None:
    """Labels are training data too: a retrain blends EM's m-probabilities with those of the pairs people
    said are one person, and says so in the model's metrics."""
    import itertools
    import random

    from cdp.demo import corpora
    from cdp.identity import matching

    spec = corpora.CORPORA["typos"]
    records, truth = corpora.generate("typos", 1000, 42)
    path = tmp_path / "typos.csv"
    records.to_csv(path, index=False)
    fresh_db.ingest.import_file(path, source=spec.source, id_column=spec.id_column, mapping=dict(spec.mapping))
    fresh_db.identity.run()
    before = fresh_db.identity.describe_model()
    assert before["m_from_labels"] is None

    by_entity: dict[str, list[str]] = {}
    for row in truth.itertuples():
        by_entity.setdefault(str(row.entity), []).append(str(row.external_id))
    pairs = [p for ids in by_entity.values() for p in itertools.combinations(ids, 2)]
    random.Random(3).shuffle(pairs)
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_l", "external_id_l", "source_r", "external_id_r", "decision"])
        writer.writerows([spec.source, a, spec.source, b, "match"] for a, b in pairs[:60])
    fresh_db.labels.import_file(labels, key_id=None)
    result = fresh_db.identity.run(retrain=True)
    after = fresh_db.identity.describe_model()
    moved = after["m_from_labels"]
    assert moved["pairs"] == 60 and moved["levels_moved"] > 0 and 0 < moved["weight"] < 1, result
    m = lambda model: [lvl["m"] for c in model["comparisons"] for lvl in c["levels"]]  # noqa: E731
    assert m(after) != m(before)
    assert matching.MIN_LABELLED_PAIRS <= 60
