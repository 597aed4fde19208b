"""CRM record identifiers (`cdp.record_ids`): a source holding ``:`` or ``%`` never makes two records one.

Source ``crm:eu`` with id ``1`` and source ``crm`` with id ``eu:1`` were both ``crm:eu:1`` (one identifier for
two people, and ``cdp resolve`` failed on Splink's "unique_id must be unique"). Real store, real CLI and
facade, a real HTTP server, and a store built at migration 0011 migrated to 0012.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cdp import CDP, Settings, record_ids
from cdp import migrations as mig
from cdp.cli import cli
from cdp.identity.review import Doubt, keep
from cdp.privacy.hashing import identifier_hash, salt
from tests.conftest import LiveServer, count
from tests.console_helpers import HTML, sign_in

PEOPLE = [  # (source, external_id, email, first name, last name): three people, three sources
    ("crm:eu", "1", "anna@x.org", "Anna", "Berg"),
    ("crm", "eu:1", "bob@y.org", "Bob", "Smith"),
    ("50%off", "7", "eve@z.org", "Eve", "Stone"),
]


def cli_ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def write_people(folder: Path) -> list[Path]:
    paths = []
    for i, (_source, external_id, email, first, last) in enumerate(PEOPLE):
        path = folder / f"people{i}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "email", "first_name", "last_name"])
            writer.writerow([external_id, email, first, last])
        paths.append(path)
    return paths


def load(cdp: CDP) -> None:
    cdp.ingest.upsert_records(
        [{"source": s, "external_id": e, "email": m, "first_name": f, "last_name": la} for s, e, m, f, la in PEOPLE]
    )


# -- the encoding ------------------------------------------------------------------------------------


def test_ordinary_sources_keep_their_values_and_colliding_ones_differ() -> None:
    assert record_ids.value("crm", "123") == "crm:123"
    assert record_ids.key("salesforce", "a:b") == "record:salesforce:a:b"
    assert record_ids.value("crm:eu", "1") == "crm%3Aeu:1" != record_ids.value("crm", "eu:1") == "crm:eu:1"
    assert record_ids.value("50%off", "7") == "50%25off:7"
    assert record_ids.parse("crm:eu:1") == ("crm", "eu:1")
    assert record_ids.parse("crm%3aeu:1") == ("crm:eu", "1")  # either case
    assert record_ids.parse("50%off:7") == ("50%off", "7")  # a '%' that escapes nothing is kept, as typed
    assert record_ids.parse("crm") is None and record_ids.parse(":1") is None and record_ids.parse("crm:") is None
    assert record_ids.parse_key("email:a@b.c") is None
    with sqlite3.connect(":memory:") as conn:
        sql = f"SELECT {record_ids.sql_value()} FROM (SELECT ? AS source, ? AS external_id)"
        for source, external_id in [("crm:eu", "1"), ("crm", "eu:1"), ("a%3A", "x"), ("plain", "p:q%")]:
            assert conn.execute(sql, (source, external_id)).fetchone()[0] == record_ids.value(source, external_id)


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_the_encoding_round_trips_and_never_joins_two_records(s1: str, e1: str, s2: str, e2: str) -> None:
    assert record_ids.parse(record_ids.value(s1, e1)) == (s1, e1)
    assert record_ids.parse_key(record_ids.key(s1, e1)) == (s1, e1)
    assert (record_ids.value(s1, e1) == record_ids.value(s2, e2)) == ((s1, e1) == (s2, e2))
    if ":" not in s1 and "%" not in s1:
        assert record_ids.value(s1, e1) == f"{s1}:{e1}"


# -- the bug, through the CLI ------------------------------------------------------------------------


def test_two_records_that_wrote_one_identifier_stay_two_and_resolve_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    for path, (source, *_rest) in zip(write_people(tmp_path), PEOPLE, strict=True):
        cli_ok("import", "records", str(path), "--source", source, "--id-column", "id", "--db", db)
    out = cli_ok("resolve", "--db", db)
    assert "3 profiles" in out
    with CDP(Settings(db=Path(db), scheduler_enabled=False)) as cdp:
        values = {r[0] for r in cdp.store.reader().execute("SELECT value FROM identifiers WHERE type = 'record'")}
        assert values == {"crm%3Aeu:1", "crm:eu:1", "50%25off:7"}
        found = {(s, e): cdp.profiles.lookup_id(source=s, external_id=e) for s, e, *_ in PEOPLE}
        assert len(set(found.values())) == 3
        for (source, external_id), pid in found.items():
            email = next(m for s, e, m, *_ in PEOPLE if (s, e) == (source, external_id))
            assert cdp.profiles.lookup_id(email=email) == pid
            records = cdp.store.query("SELECT source, external_id FROM source_records WHERE profile_id = ?", (pid,))
            assert [(r["source"], r["external_id"]) for r in records] == [(source, external_id)]
    exported = tmp_path / "records.csv"
    cli_ok("export", "records", "--output", str(exported), "--db", db)
    with exported.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len({r["profile_id"] for r in rows}) == 3


def test_lookup_by_source_and_external_id_over_http(server: LiveServer, read_key: str) -> None:
    load(server.cdp)
    server.cdp.identity.run()
    with server.client(headers={"Authorization": f"Bearer {read_key}"}) as client:
        seen = set()
        for source, external_id, email, *_ in PEOPLE:
            answer = client.get("/v1/profiles/lookup", params={"source": source, "external_id": external_id})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert {"type": "record", "value": record_ids.value(source, external_id)} in body["identifiers"]
            assert {"type": "email", "value": email} in body["identifiers"]
            seen.add(body["id"])
        assert len(seen) == 3
        missing = client.get("/v1/profiles/lookup", params={"source": "crm:eu", "external_id": "eu:1"})
        assert missing.status_code == 404 and missing.json()["code"]


# -- stewardship, explain, labels, review, privacy ---------------------------------------------------


def test_merge_split_explain_and_labels_with_colons_and_percents(fresh_db: CDP, tmp_path: Path) -> None:
    cdp = fresh_db
    load(cdp)
    anna = cdp.profiles.lookup_id(source="crm:eu", external_id="1")
    eve = cdp.profiles.lookup_id(source="50%off", external_id="7")
    bob = cdp.profiles.lookup_id(source="crm", external_id="eu:1")
    merged = cdp.stewardship.merge(anna, eve, note="one person", key_id="k")
    survivor = merged["profile_id"]
    assert cdp.profiles.lookup_id(source="50%off", external_id="7") == survivor
    explain = cdp.profiles.explain(survivor)
    origins = {e["origin"] for e in explain["edges"] if e["kind"] == "identifier"}
    assert origins == {"record:crm%3Aeu:1", "record:50%25off:7"}
    assert [label["decision"] for label in cdp.labels.all()] == ["match"]
    assert {cdp.labels.all()[0]["left"], cdp.labels.all()[0]["right"]} == {"record:crm%3Aeu:1", "record:50%25off:7"}
    # Label files name the raw source: exported, then imported into another store, the same keys come back.
    text = cdp.labels.export_csv()
    row = next(csv.DictReader(text.splitlines()))
    assert {(row["source_l"], row["external_id_l"]), (row["source_r"], row["external_id_r"])} == {
        ("crm:eu", "1"),
        ("50%off", "7"),
    }
    (tmp_path / "labels.csv").write_text(text)
    with CDP(Settings(db=tmp_path / "other.db", scheduler_enabled=False)) as other:
        other.labels.import_file(tmp_path / "labels.csv", key_id="k")
        assert [(x["left"], x["right"]) for x in other.labels.all()] == [
            (x["left"], x["right"]) for x in cdp.labels.all()
        ]
    # Split the escaped record off by its raw parts: it alone moves, Bob (crm / eu:1) is untouched.
    split = cdp.stewardship.split(
        survivor, [{"source": "50%off", "external_id": "7"}], [{"type": "email", "value": "eve@z.org"}], key_id="k"
    )
    assert cdp.profiles.lookup_id(source="50%off", external_id="7") == split["new_profile_id"] != survivor
    assert cdp.profiles.lookup_id(email="eve@z.org") == split["new_profile_id"]
    assert cdp.profiles.lookup_id(source="crm:eu", external_id="1") == survivor
    assert cdp.profiles.lookup_id(source="crm", external_id="eu:1") == bob
    assert "record:50%25off:7" in split["moved"]
    # A full run keeps what people said.
    cdp.identity.run()
    assert cdp.profiles.lookup_id(source="50%off", external_id="7") != cdp.profiles.lookup_id(
        source="crm:eu", external_id="1"
    )


def test_cli_split_reads_an_escaped_source(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        load(cdp)
        anna = cdp.profiles.lookup_id(source="crm:eu", external_id="1")
        bob = cdp.profiles.lookup_id(source="crm", external_id="eu:1")
    cli_ok("identity", "merge", anna, bob, "--db", str(db))
    done = json.loads(cli_ok("identity", "split", anna, "--record", "crm%3Aeu:1", "--db", str(db)))
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        assert cdp.profiles.lookup_id(source="crm:eu", external_id="1") == done["new_profile_id"]
        assert cdp.profiles.lookup_id(source="crm", external_id="eu:1") == done["profile_id"] != done["new_profile_id"]


def test_review_items_show_and_filter_by_a_source_with_a_colon(fresh_db: CDP) -> None:
    cdp = fresh_db
    load(cdp)
    left, right = record_ids.key("crm:eu", "1"), record_ids.key("crm", "eu:1")
    cdp.store.write(lambda conn: keep(conn, [Doubt(left, right, "below_threshold", "test", 1.0, 0.5)], replace=False))
    page = cdp.review.page(source="crm:eu").data
    assert len(page) == 1
    sides = {(page[0][s]["source"], page[0][s]["external_id"]) for s in ("left", "right")}
    assert sides == {("crm:eu", "1"), ("crm", "eu:1")}
    assert page[0]["left"]["fields"]["email"] in {"anna@x.org", "bob@y.org"}
    assert len(cdp.review.page(source="crm").data) == 1  # Bob's record is of source crm
    assert cdp.review.page(source="crm:e").data == []
    item = cdp.review.decide(page[0]["id"], "match", key_id="k")
    assert item["merge"]["profile_id"] == cdp.profiles.lookup_id(source="crm:eu", external_id="1")
    assert cdp.profiles.lookup_id(source="crm", external_id="eu:1") == item["merge"]["profile_id"]


def test_privacy_export_and_suppression_of_a_record_with_a_colon(fresh_db: CDP) -> None:
    cdp = fresh_db
    load(cdp)
    for value in ({"source": "crm:eu", "external_id": "1"}, "crm%3Aeu:1"):
        result = cdp.privacy.submit("export", [{"type": "record", "value": value}], background=False)
        assert result["status"] == "done", result
        doc: dict[str, Any] = orjson.loads(cdp.privacy.download(result["id"]).read_bytes())
        assert [(r["source"], r["external_id"]) for r in doc["records"]] == [("crm:eu", "1")]
    done = cdp.privacy.submit(
        "suppress_with_delete",
        [{"type": "record", "value": {"source": "crm:eu", "external_id": "1"}}],
        background=False,
    )
    assert done["status"] == "done", done
    assert count(cdp, "source_records", "source = 'crm:eu'") == 0
    assert count(cdp, "source_records", "source = 'crm'") == 1  # the other person is untouched
    again = cdp.ingest.upsert_records(
        [
            {"source": "crm:eu", "external_id": "1", "email": "anna.new@x.org"},  # suppressed
            {"source": "crm", "external_id": "eu:1", "email": "bob@y.org", "first_name": "Bob"},  # not
        ]
    )
    assert again.inserted == 0 and count(cdp, "source_records", "source = 'crm:eu'") == 0
    assert count(cdp, "source_records", "source = 'crm'") == 1
    with pytest.raises(Exception, match="source:external_id"):
        cdp.privacy.submit("export", [{"type": "record", "value": "no-colon"}], background=False)


# -- migration 0012 ----------------------------------------------------------------------------------

NOW = "2026-01-01T00:00:00.000Z"


def migrated_to_0011(db: Path, tmp_path: Path) -> sqlite3.Connection:
    """A connection to a new store at ``db`` made by migrations 0001-0011 only."""
    folder = tmp_path / "upto11"
    folder.mkdir()
    for path in sorted(mig.migrations_dir().glob("*.sql")):
        if int(path.name[:4]) <= 11:
            shutil.copy(path, folder / path.name)
    conn = sqlite3.connect(db, isolation_level=None)
    mig.apply(conn, folder)
    return conn


def store_at_0011(db: Path, tmp_path: Path) -> None:
    """A store made by migrations up to 0011, holding what the code before 0012 wrote: source ``crm:eu`` / id
    ``1`` (Anna) and source ``crm`` / id ``eu:1`` (Bob) share identifier ``crm:eu:1``; ``shop:uk`` / ``9``
    (Cara), ``50%`` / ``7`` (Eve) and the ordinary ``crm`` / ``5`` (Dan) have their own."""
    conn = migrated_to_0011(db, tmp_path)
    assert max(v for v in mig.applied(conn)) == 11
    script = [
        ("INSERT INTO profiles (id, created_at, updated_at) VALUES (?, ?, ?)", [(p, NOW, NOW) for p in "ABCD"]),
        (
            "INSERT INTO source_records (id, source, external_id, email, first_name, content_hash, created_at,"
            " updated_at, profile_id) VALUES (?, ?, ?, ?, ?, 'h', ?, ?, ?)",
            [
                (1, "crm:eu", "1", "anna@x.org", "Anna", NOW, NOW, "A"),
                (2, "crm", "eu:1", "bob@y.org", "Bob", NOW, NOW, "A"),
                (3, "shop:uk", "9", "cara@z.org", "Cara", NOW, NOW, "B"),
                (4, "crm", "5", "dan@w.org", "Dan", NOW, NOW, "C"),
                (5, "50%", "7", "eve@v.org", "Eve", NOW, NOW, "D"),
            ],
        ),
        (
            "INSERT INTO identifiers (id, type, value, profile_id, first_seen) VALUES (?, ?, ?, ?, ?)",
            [
                (1, "record", "crm:eu:1", "A", NOW),
                (2, "email", "anna@x.org", "A", NOW),
                (3, "email", "bob@y.org", "A", NOW),
                (4, "record", "shop:uk:9", "B", NOW),
                (5, "email", "cara@z.org", "B", NOW),
                (6, "record", "crm:5", "C", NOW),
                (7, "email", "dan@w.org", "C", NOW),
                (8, "record", "50%:7", "D", NOW),
                (9, "email", "eve@v.org", "D", NOW),
            ],
        ),
        (
            "INSERT INTO identity_links (a, b, origin, created_at) VALUES (?, ?, ?, ?)",
            [
                (1, 2, "record:crm:eu:1", NOW),
                (1, 3, "record:crm:eu:1", NOW),
                (4, 5, "record:shop:uk:9", NOW),
                (6, 7, "record:crm:5", NOW),
                (8, 9, "record:50%:7", NOW),
            ],
        ),
        (
            "INSERT INTO identifier_attributes (identifier_id, type, value) VALUES (?, 'first_name', ?)",
            [(1, "anna"), (1, "bob"), (4, "cara")],
        ),
        (
            "INSERT INTO match_edges (node_l, node_r, match_weight, match_probability, model_version, created_at)"
            " VALUES (?, ?, 3.0, 0.9, 1, ?)",
            [("record:crm:5", "record:shop:uk:9", NOW)],
        ),
        (
            "INSERT INTO review_items (node_l, node_r, reason, priority, created_at, updated_at)"
            " VALUES (?, ?, 'below_threshold', 0.1, ?, ?)",
            [("record:crm:5", "record:shop:uk:9", NOW, NOW)],
        ),
        (
            "INSERT INTO identity_labels (node_l, node_r, decision, origin, created_at) VALUES (?, ?, ?, 'import', ?)",
            [
                ("record:50%:7", "record:shop:uk:9", "no_match", NOW),
                ("record:crm:5", "record:crm:eu:1", "no_match", NOW),
            ],
        ),
        (
            "INSERT INTO profile_consent (profile_id, category, granted, at, origin) VALUES (?, ?, 1, ?, ?)",
            [("B", "marketing", NOW, "record:shop:uk:9")],
        ),
        (
            "INSERT INTO identity_conflicts (rule, message, identifier_type, identifier_value, origin, created_at)"
            " VALUES ('shared', 'm', 'record', ?, ?, ?)",
            [("shop:uk:9", "record:shop:uk:9", NOW)],
        ),
        (
            "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                ("split", "B", "C", "manual", '{"identifiers": ["email:cara@z.org", "record:shop:uk:9"]}', NOW),
                ("merge", "B", "C", "identifier", '{"type": "record", "value": "shop:uk:9", "origin": "x"}', NOW),
            ],
        ),
        (
            "INSERT INTO manual_actions (kind, profile_id, other_id, state, created_at) VALUES (?, ?, ?, ?, ?)",
            [("split", "B", "D", '{"identifiers": [4], "labels": [["record:50%:7", "record:shop:uk:9", null]]}', NOW)],
        ),
    ]
    conn.execute("BEGIN")
    for sql, rows in script:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")
    conn.close()


def test_a_store_at_0011_migrates_its_record_identifiers(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store_at_0011(db, tmp_path)
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        conn = cdp.store.reader()
        query = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        assert (12, "record_ids") in query("SELECT version, name FROM schema_migrations")
        idents = dict(query("SELECT value, profile_id FROM identifiers WHERE type = 'record'"))
        # Bob (the ordinary source) keeps crm:eu:1; Anna gets an identifier of her own, in the same profile
        # until the next run; the others are rewritten in place (same ids); Dan's is untouched.
        assert idents == {"crm:eu:1": "A", "crm%3Aeu:1": "A", "shop%3Auk:9": "B", "crm:5": "C", "50%25:7": "D"}
        assert dict(query("SELECT id, value FROM identifiers WHERE id IN (4, 6, 8)")) == {
            4: "shop%3Auk:9",
            6: "crm:5",
            8: "50%25:7",
        }
        anna = query("SELECT id FROM identifiers WHERE value = 'crm%3Aeu:1'")[0][0]
        assert sorted(query("SELECT a, b, origin FROM identity_links")) == sorted(
            [
                (1, 3, "record:crm:eu:1"),
                (anna, 2, "record:crm%3Aeu:1"),
                (4, 5, "record:shop%3Auk:9"),
                (6, 7, "record:crm:5"),
                (8, 9, "record:50%25:7"),
            ]
        )
        assert sorted(query("SELECT identifier_id, value FROM identifier_attributes")) == sorted(
            [(1, "bob"), (anna, "anna"), (4, "cara")]
        )
        assert query("SELECT node_l, node_r FROM match_edges") == [("record:crm:5", "record:shop%3Auk:9")]
        assert query("SELECT node_l, node_r FROM review_items") == [("record:crm:5", "record:shop%3Auk:9")]
        assert sorted(query("SELECT node_l, node_r, decision FROM identity_labels")) == [
            ("record:50%25:7", "record:shop%3Auk:9", "no_match"),
            ("record:crm:5", "record:crm:eu:1", "no_match"),  # the ambiguous key stays with the ordinary record
        ]
        assert query("SELECT origin FROM profile_consent") == [("record:shop%3Auk:9",)]
        assert query("SELECT identifier_value, origin FROM identity_conflicts") == [
            ("shop%3Auk:9", "record:shop%3Auk:9")
        ]
        details = [orjson.loads(r[0]) for r in query("SELECT details FROM merges ORDER BY id")]
        assert details[0]["identifiers"] == ["email:cara@z.org", "record:shop%3Auk:9"]
        assert details[1]["value"] == "shop%3Auk:9"
        state = orjson.loads(query("SELECT state FROM manual_actions")[0][0])
        assert state["labels"] == [["record:50%25:7", "record:shop%3Auk:9", None]]
        assert query("SELECT name FROM sqlite_temp_master") == []
        # The next run parts Anna and Bob; every record is found by its raw parts.
        cdp.identity.run()
        found = {
            (s, e): cdp.profiles.lookup_id(source=s, external_id=e)
            for s, e in [("crm:eu", "1"), ("crm", "eu:1"), ("shop:uk", "9"), ("crm", "5"), ("50%", "7")]
        }
        assert len(set(found.values())) == 5
        assert cdp.profiles.lookup_id(email="anna@x.org") == found[("crm:eu", "1")]
        assert cdp.profiles.lookup_id(email="bob@y.org") == found[("crm", "eu:1")]
        before = query("SELECT id, type, value, profile_id FROM identifiers ORDER BY id")
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:  # opening again changes nothing
        after = cdp.store.reader().execute("SELECT id, type, value, profile_id FROM identifiers ORDER BY id")
        assert after.fetchall() == before


def test_a_store_without_such_sources_is_left_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    conn = migrated_to_0011(db, tmp_path)
    conn.execute("INSERT INTO profiles (id, created_at, updated_at) VALUES ('A', ?, ?)", (NOW, NOW))
    conn.execute(
        "INSERT INTO source_records (source, external_id, content_hash, created_at, updated_at, profile_id)"
        " VALUES ('crm', 'x:1', 'h', ?, ?, 'A')",
        (NOW, NOW),
    )
    conn.execute(
        "INSERT INTO identifiers (type, value, profile_id, first_seen) VALUES ('record', 'crm:x:1', 'A', ?)", (NOW,)
    )
    conn.close()
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        assert [r["value"] for r in cdp.store.query("SELECT value FROM identifiers")] == ["crm:x:1"]
        assert cdp.profiles.lookup_id(source="crm", external_id="x:1") == "A"


def test_console_split_form_names_an_escaped_record(server: LiveServer, admin_key: str) -> None:
    cdp = server.cdp
    load(cdp)
    anna = cdp.profiles.lookup_id(source="crm:eu", external_id="1")
    bob = cdp.profiles.lookup_id(source="crm", external_id="eu:1")
    survivor = cdp.stewardship.merge(anna, bob, key_id="k")["profile_id"]
    with server.client() as client:
        csrf = sign_in(client, admin_key)
        page = client.get(f"/console/people/{survivor}", headers=HTML)
        boxes = re.findall(r'name="record" value="([^"]*)"', page.text)
        assert sorted(boxes) == ["record:crm%3Aeu:1", "record:crm:eu:1"]
        split = client.post(
            f"/console/people/{survivor}/split",
            data={"csrf_token": csrf, "record": "record:crm%3Aeu:1", "note": "two people"},
            headers=HTML,
            follow_redirects=False,
        )
        assert split.status_code == 303, split.text
    moved = cdp.profiles.lookup_id(source="crm:eu", external_id="1")
    assert moved != survivor and cdp.profiles.lookup_id(source="crm", external_id="eu:1") == survivor


def test_a_record_suppressed_before_0012_stays_suppressed(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store_at_0011(db, tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    legacy = identifier_hash(salt(conn), "record", "shop:uk:9")  # as the code before 0012 hashed it
    conn.execute(
        "INSERT INTO privacy_suppressions (hash, type, request_id, created_at) VALUES (?, 'record', 'prq_old', ?)",
        (legacy, NOW),
    )
    conn.close()
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        again = cdp.ingest.upsert_records([{"source": "shop:uk", "external_id": "10", "email": "new@z.org"}])
        assert again.inserted == 1  # another record of the source is not touched
        dropped = cdp.ingest.upsert_records([{"source": "shop:uk", "external_id": "9", "email": "cara2@z.org"}])
        assert dropped.inserted == dropped.updated == 0
        lifted = cdp.privacy.submit(
            "unsuppress", [{"type": "record", "value": {"source": "shop:uk", "external_id": "9"}}], background=False
        )
        assert lifted["status"] == "done", lifted
        assert count(cdp, "privacy_suppressions") == 0
        back = cdp.ingest.upsert_records([{"source": "shop:uk", "external_id": "9", "email": "cara2@z.org"}])
        assert back.updated == 1 or back.inserted == 1
