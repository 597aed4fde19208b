"""The full resolution run on a real store: stable ids, splits, all-or-nothing."""

from __future__ import annotations

from typing import Any

import pytest

from cdp import CDP
from cdp.errors import ResolutionFailed
from tests.conftest import count


def snapshot(cdp: CDP) -> dict[str, Any]:
    conn = cdp.store.reader()
    return {
        "identifiers": conn.execute("SELECT type, value, profile_id FROM identifiers ORDER BY id").fetchall(),
        "profiles": conn.execute("SELECT id, merged_into FROM profiles ORDER BY id").fetchall(),
        "events": conn.execute("SELECT message_id, profile_id FROM events ORDER BY id").fetchall(),
        "records": conn.execute("SELECT source, external_id, profile_id FROM source_records ORDER BY id").fetchall(),
        "merges": conn.execute("SELECT * FROM merges ORDER BY id").fetchall(),
    }


def seed(cdp: CDP, key: str) -> None:
    cdp.ingest.batch(
        {
            "batch": [
                {"type": "page", "anonymousId": "a1", "messageId": "p1"},
                {
                    "type": "identify",
                    "anonymousId": "a1",
                    "userId": "u1",
                    "traits": {"email": "ann@x.com"},
                    "messageId": "i1",
                },
                {"type": "identify", "anonymousId": "ipad", "userId": "u2", "messageId": "i2"},
                {"type": "identify", "anonymousId": "ipad", "userId": "u3", "messageId": "i3"},
            ]
        },
        write_key=key,
    )
    cdp.ingest.upsert_records(
        [
            {"source": "sf", "external_id": "1", "email": "ann@x.com", "first_name": "Ann"},
            {"source": "sf", "external_id": "2", "email": "bo@x.com", "first_name": "Bo", "birthday": "1990-01-01"},
            {"source": "hs", "external_id": "7", "email": "bo@x.com", "first_name": "Bob", "birthday": "1970-01-01"},
        ]
    )


def test_rerun_without_new_data_changes_nothing(fresh_db: CDP, write_key: str) -> None:
    seed(fresh_db, write_key)
    before = snapshot(fresh_db)
    first = fresh_db.identity.run()
    assert first["moved_identifiers"] == 0 and first["merges"] == 0 and first["splits"] == 0
    assert snapshot(fresh_db) == before
    second = fresh_db.identity.run()
    assert second["moved_identifiers"] == 0
    assert snapshot(fresh_db) == before
    runs = fresh_db.store.query("SELECT status FROM resolution_runs")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]


def test_changed_record_splits_off_with_a_new_id(fresh_db: CDP, write_key: str) -> None:
    seed(fresh_db, write_key)
    ann = fresh_db.profiles.lookup_id(user_id="u1")
    assert fresh_db.profiles.lookup_id(source="sf", external_id="1") == ann
    # The CRM record's email changes: its old pairing with ann@x.com is no longer evidence.
    fresh_db.ingest.upsert_records(
        [{"source": "sf", "external_id": "1", "email": "ann.new@y.com", "first_name": "Ann"}]
    )
    assert fresh_db.profiles.lookup_id(source="sf", external_id="1") == ann  # real time only adds links
    result = fresh_db.identity.run()
    assert result["splits"] == 1 and result["new_profiles"] == 1
    record_profile = fresh_db.profiles.lookup_id(source="sf", external_id="1")
    assert record_profile != ann
    assert fresh_db.profiles.lookup_id(user_id="u1") == ann  # the part holding the user id keeps the id
    assert fresh_db.profiles.lookup_id(email="ann.new@y.com") == record_profile
    (split,) = [m for m in fresh_db.profiles.merges(ann) if m["kind"] == "split"]
    assert split["profile_id"] == ann and split["new_profile_id"] == record_profile
    assert fresh_db.store.query("SELECT profile_id FROM source_records WHERE external_id = '1'")[0]["profile_id"] == (
        record_profile
    )
    assert fresh_db.identity.run()["splits"] == 0  # and it stays put


@pytest.mark.parametrize(("source", "decoy"), [("sf", "sf:eu"), ("crm:eu", "crm")])
def test_a_split_moves_the_record_whatever_colons_its_source_holds(
    fresh_db: CDP, write_key: str, source: str, decoy: str
) -> None:
    """Record identifiers are ``source:external_id`` and a source may hold ``:``: the split moves the
    record named and leaves alone the record of the same id in a source named like it."""
    seed(fresh_db, write_key)
    fresh_db.ingest.upsert_records(
        [
            {"source": source, "external_id": "1", "email": "ann@x.com"},
            {"source": decoy, "external_id": "1", "email": "zed@z.com"},
        ]
    )
    ann = fresh_db.profiles.lookup_id(user_id="u1")
    assert fresh_db.profiles.lookup_id(source=source, external_id="1") == ann
    fresh_db.ingest.upsert_records([{"source": source, "external_id": "1", "email": "ann.new@y.com"}])
    decoy_before = fresh_db.store.query("SELECT external_id, profile_id FROM source_records WHERE source = ?", (decoy,))
    result = fresh_db.identity.run()
    assert result["splits"] == 1
    moved = fresh_db.profiles.lookup_id(source=source, external_id="1")
    assert moved != ann and fresh_db.profiles.lookup_id(email="ann.new@y.com") == moved
    assert (
        fresh_db.store.query("SELECT profile_id FROM source_records WHERE source = ?", (source,))[0]["profile_id"]
        == moved
    )
    assert (
        fresh_db.store.query("SELECT external_id, profile_id FROM source_records WHERE source = ?", (decoy,))
        == decoy_before
    )


def test_household_and_shared_device_stay_apart_after_a_run(fresh_db: CDP, write_key: str) -> None:
    seed(fresh_db, write_key)
    fresh_db.identity.run()
    assert fresh_db.profiles.lookup_id(user_id="u2") != fresh_db.profiles.lookup_id(user_id="u3")
    assert fresh_db.profiles.lookup_id(source="sf", external_id="2") != fresh_db.profiles.lookup_id(
        source="hs", external_id="7"
    )


def test_failed_run_changes_nothing(fresh_db: CDP, write_key: str) -> None:
    seed(fresh_db, write_key)
    fresh_db.ingest.upsert_records([{"source": "sf", "external_id": "1", "email": "other@y.com"}])
    before = snapshot(fresh_db)
    # A real failure inside the apply transaction, after the new profile row was written: SQLite
    # aborts the first identifier move.
    fresh_db.store.write(
        lambda conn: conn.execute(
            "CREATE TRIGGER refuse_moves BEFORE UPDATE OF profile_id ON identifiers"
            " BEGIN SELECT RAISE(ABORT, 'simulated crash'); END"
        )
    )
    with pytest.raises(ResolutionFailed, match="changed nothing"):
        fresh_db.identity.run()
    assert snapshot(fresh_db) == before
    assert count(fresh_db, "resolution_runs", "status = 'failed'") == 1
    assert "simulated crash" in fresh_db.store.query("SELECT error FROM resolution_runs")[0]["error"]
    fresh_db.store.write(lambda conn: conn.execute("DROP TRIGGER refuse_moves"))
    assert fresh_db.identity.run()["splits"] == 1  # the next run does the work


def test_traits_are_refreshed(fresh_db: CDP, write_key: str) -> None:
    seed(fresh_db, write_key)
    fresh_db.identity.run()
    pid = fresh_db.profiles.lookup_id(user_id="u1")
    row = fresh_db.store.query("SELECT traits, computed, refreshed_at FROM profiles WHERE id = ?", (pid,))[0]
    assert '"email":"ann@x.com"' in row["traits"] and row["refreshed_at"]
    assert '"event_count":2' in row["computed"]


def test_export_and_evaluate(fresh_db: CDP, write_key: str, tmp_path: Any) -> None:
    import csv
    import json

    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from cdp.cli import cli

    seed(fresh_db, write_key)
    db = str(fresh_db.settings.db)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "records", "--db", db])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [(r["source"], r["external_id"]) for r in rows] == [("hs", "7"), ("sf", "1"), ("sf", "2")]
    ann = fresh_db.profiles.lookup_id(user_id="u1")
    assert next(r for r in rows if r["external_id"] == "1")["profile_id"] == ann

    out = tmp_path / "profiles.parquet"
    result = runner.invoke(cli, ["export", "profiles", "--format", "parquet", "--output", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    row = next(r for r in table if r["profile_id"] == ann)
    assert row["email"] == "ann@x.com" and row["first_name"] == "Ann"
    assert json.loads(row["computed"])["event_count"] == 2
    assert len(table) == count(fresh_db, "profiles", "merged_into IS NULL")

    truth = tmp_path / "truth.csv"
    truth.write_text("source,external_id,entity\nsf,1,ann\nsf,2,bo\nhs,7,bob\nzz,9,nobody\n")
    result = runner.invoke(cli, ["identity", "evaluate", "--truth", str(truth), "--json", "--db", db])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert scored["records"] == 3 and scored["records_missing"] == 1
    assert scored["pairwise"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    truth.write_text("source,external_id,entity\nsf,1,x\nsf,2,x\nhs,7,x\n")
    scored = json.loads(
        runner.invoke(cli, ["identity", "evaluate", "--truth", str(truth), "--json", "--db", db]).stdout
    )
    assert scored["pairwise"]["recall"] == 0.0 and scored["b_cubed"]["recall"] < 0.5
    bad = runner.invoke(cli, ["identity", "evaluate", "--truth", str(tmp_path / "profiles.parquet"), "--db", db])
    assert bad.exit_code != 0
