"""``cdp.lineage`` (where each trait came from, records side by side), ``cdp.quality_samples`` (the rows behind a
quality count) and the name search on its indexes (migration 0011)."""

from __future__ import annotations

import pytest

from cdp import CDP
from cdp.errors import InvalidBatch, InvalidInput


def _two_sources(cdp: CDP) -> str:
    cdp.ingest.upsert_records(
        [
            {
                "external_id": "s1",
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "plan": "pro",
            }
        ],
        source="salesforce",
        id_column="external_id",
    )
    cdp.ingest.upsert_records(
        [{"external_id": "h1", "email": "ada@example.com", "first_name": "Adda", "last_name": "Lovelace"}],
        source="hubspot",
        id_column="external_id",
    )
    return cdp.profiles.lookup_id(email="ada@example.com")


def test_traits_say_which_source_won_and_what_the_others_hold(fresh_db: CDP) -> None:
    pid = _two_sources(fresh_db)
    traits = {t["trait"]: t for t in fresh_db.lineage.traits(pid)}
    first = traits["first_name"]
    assert {first["value"], *(o["value"] for o in first["others"])} == {"Ada", "Adda"}
    assert first["source"] in ("salesforce", "hubspot")
    assert [o["source"] for o in first["others"]] == [({"salesforce", "hubspot"} - {first["source"]}).pop()]
    assert traits["plan"] == {**traits["plan"], "value": "pro", "source": "salesforce", "others": []}
    # The chosen values are the profile's unified traits.
    unified = fresh_db.profiles.get(pid)["traits"]
    assert unified["first_name"] == first["value"] and unified["last_name"] == "Lovelace"


def test_records_side_by_side(fresh_db: CDP) -> None:
    pid = _two_sources(fresh_db)
    records = fresh_db.lineage.records(pid)
    assert [(r["source"], r["external_id"]) for r in records] == [("salesforce", "s1"), ("hubspot", "h1")]
    assert records[0]["fields"]["first_name"] == "Ada" and records[1]["fields"]["first_name"] == "Adda"
    assert "plan" in records[0]["fields"] and "plan" not in records[1]["fields"]


def test_quality_samples_are_the_flagged_rows(fresh_db: CDP) -> None:
    fresh_db.ingest.upsert_records(
        [
            {"external_id": "bad", "email": "not-an-email", "first_name": "B"},
            {"external_id": "good", "email": "good@example.com", "first_name": "G"},
        ],
        source="crm",
        id_column="external_id",
    )
    report = fresh_db.quality.report()
    invalid = next(r for r in report["records"] if r["source"] == "crm")["invalid"]
    flagged = fresh_db.quality_samples.records("crm")
    assert [r["external_id"] for r in flagged] == ["bad"]
    flag = flagged[0]["flags"][0]
    assert flag.split(":", 1)[1] in invalid
    assert fresh_db.quality_samples.records("crm", flag) == flagged
    assert fresh_db.quality_samples.records("crm", "invalid:nothing") == []


def test_name_search_is_a_prefix_on_indexes(fresh_db: CDP) -> None:
    pid = _two_sources(fresh_db)
    for q in ("adda love", "Ada L", "lovel", "ADA", "h1"):
        assert [p["id"] for p in fresh_db.profiles.search(q).data] == [pid], q
    for q in ("da", "lovelace x", "adaa"):
        assert fresh_db.profiles.search(q).data == [], q
    params: dict[str, object] = {}
    plan = " ".join(
        str(row[3])
        for row in fresh_db.store.reader().execute(
            "EXPLAIN QUERY PLAN SELECT * FROM (" + fresh_db.profiles._matching("ada", params) + ")", params
        )
    )
    assert "SCAN profiles" not in plan and "SCAN source_records" not in plan
    assert "profiles_search_full_name" in plan and "source_records_search_last_name" in plan


def test_event_names_and_rejections_come_from_the_counters(fresh_db: CDP, write_key: str) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Order Completed"},
        {"type": "track", "event": "No Identity"},  # refused: no user or anonymous id
    ]
    try:
        fresh_db.ingest.batch({"batch": batch}, write_key=write_key)
    except InvalidBatch as exc:
        assert exc.details["rejected"] == 1
    else:
        raise AssertionError("the batch should report its refused message")
    assert fresh_db.quality_samples.event_names() == ["No Identity", "Order Completed"]
    assert fresh_db.quality_samples.rejected() == [{"source": "web", "event": "No Identity", "rejected": 1}]


def test_find_walks_each_index_in_order_and_pages(fresh_db: CDP) -> None:
    people = [("Ada", "Lovelace"), ("Adam", "Smith"), ("Adele", "Adams"), ("Bob", "Adler")]
    fresh_db.ingest.upsert_records(
        [
            {"external_id": f"r{n}", "first_name": first, "last_name": last, "email": f"{first.lower()}@example.com"}
            for n, (first, last) in enumerate(people)
        ],
        source="crm",
        id_column="external_id",
    )
    every = fresh_db.profiles.find("ad", limit=100).data
    keys = [(row["matched"]["on"], row["matched"]["value"]) for row in every]
    assert keys == sorted(keys, key=lambda k: k[1])  # in the order of what matched
    assert ("name", "ada lovelace") in keys and ("last_name", "adams") in keys and ("last_name", "adler") in keys
    assert ("email", "ada@example.com") in keys and ("email", "bob@example.com") not in keys
    names = {f"{r['traits']['first_name']} {r['traits']['last_name']}" for r in every}
    assert names == {"Ada Lovelace", "Adam Smith", "Adele Adams", "Bob Adler"}
    # Pages of 2 give the same rows, in the same order, with no repeats.
    paged, cursor = [], None
    while True:
        page = fresh_db.profiles.find("ad", limit=2, cursor=cursor)
        paged += page.data
        cursor = page.next
        if cursor is None:
            break
    assert [(r["id"], r["matched"]) for r in paged] == [(r["id"], r["matched"]) for r in every]
    assert fresh_db.profiles.find("zz").data == []
    with pytest.raises(InvalidInput):
        fresh_db.profiles.find("  ")
