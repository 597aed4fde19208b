"""CRM records: file imports (CSV, JSON, NDJSON, Parquet), idempotent upserts, and POST /v1/records."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdp import CDP
from cdp.errors import InvalidInput
from tests.conftest import LiveServer, count

HEADER = ["Id", "FirstName", "LastName", "Email", "Phone", "MailingCity", "Zip", "Birthdate", "LeadSource"]
ROWS = [
    ["003A", "Jon", "Smyth", " Jon.Smyth@Gmail.com ", "(415) 555-0134", "Boston", "02115", "1985-03-04", "Web"],
    ["003B", "Mary", "Jones", "mary@", "12", "Leeds", "ls1 4ap", "31/02/1990", "Event"],
    ["", "No", "Id", "x@y.com", "", "", "", "", ""],
    ["003C", "Ann", "Lee", "ann@lee.io", "+44 7700 900123", "London", "sw1a 1aa", "04/05/1970", ""],
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def records(cdp: CDP) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in cdp.store.query("SELECT * FROM source_records ORDER BY id")}


def test_csv_import_maps_normalises_and_reports_bad_rows(fresh_db: CDP, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sf.csv", HEADER, ROWS)
    summary = fresh_db.ingest.import_file(
        path, source="salesforce", id_column="Id", mapping={"MailingCity": "address.city", "Zip": "address.postal_code"}
    )
    assert (summary.received, summary.inserted, summary.updated, summary.rejected) == (4, 3, 0, 1)
    assert summary.errors == [
        {"row": 3, "field": "Id", "code": "missing_field", "message": "the record has no value in its id column 'Id'"}
    ]
    assert summary.auto_mapped == {
        "FirstName": "first_name",
        "LastName": "last_name",
        "Email": "email",
        "Phone": "phone",
        "Birthdate": "birthday",
    }
    stored = records(fresh_db)
    jon = stored["003A"]
    assert (jon["source"], jon["email"], jon["phone"], jon["birthday"]) == (
        "salesforce",
        "jon.smyth@gmail.com",
        "+14155550134",
        "1985-03-04",
    )
    assert (jon["address_city"], jon["address_postal_code"]) == ("Boston", "02115")
    assert json.loads(jon["traits"]) == {"LeadSource": "Web"}
    assert jon["quality_flags"] is None
    mary = stored["003B"]
    assert mary["email"] is None and mary["phone"] is None and mary["birthday"] is None
    assert mary["address_postal_code"] == "LS1 4AP"
    assert json.loads(mary["quality_flags"]) == ["invalid:email", "invalid:phone", "invalid:birthday"]
    assert stored["003C"]["phone"] == "+447700900123" and stored["003C"]["birthday"] == "1970-04-05"


def test_reimport_is_idempotent_and_updates_changed_rows(fresh_db: CDP, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sf.csv", HEADER, ROWS)
    fresh_db.ingest.import_file(path, source="salesforce", id_column="Id")
    before = records(fresh_db)
    again = fresh_db.ingest.import_file(path, source="salesforce", id_column="Id")
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 3, 1)
    assert records(fresh_db) == before

    changed = [list(r) for r in ROWS]
    changed[0][5] = "Cambridge"
    write_csv(path, HEADER, changed)
    third = fresh_db.ingest.import_file(path, source="salesforce", id_column="Id")
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 2)
    after = records(fresh_db)
    assert after["003A"]["address_city"] == "Cambridge"
    assert after["003A"]["id"] == before["003A"]["id"]
    assert after["003A"]["created_at"] == before["003A"]["created_at"]
    # The same external id in another source is another record.
    fresh_db.ingest.import_file(path, source="hubspot", id_column="Id")
    assert count(fresh_db, "source_records") == 6


@pytest.mark.parametrize("fmt", ["json", "ndjson", "parquet"])
def test_other_formats(fresh_db: CDP, tmp_path: Path, fmt: str) -> None:
    rows = [
        {"contact_id": 1, "email": "A@B.com", "first_name": "Al", "address": {"city": "Paris", "country": "France"}},
        {"contact_id": 2, "email": "c@d.com", "plan": "pro"},
    ]
    path = tmp_path / f"contacts.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "ndjson":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    else:
        flat = [
            {
                "contact_id": 1,
                "email": "A@B.com",
                "first_name": "Al",
                "city": "Paris",
                "country": "France",
                "plan": None,
            },
            {"contact_id": 2, "email": "c@d.com", "plan": "pro"},
        ]
        pq.write_table(pa.Table.from_pylist(flat), path)
    summary = fresh_db.ingest.import_file(path, source="shop", id_column="contact_id")
    assert summary.inserted == 2
    if fmt == "ndjson":
        assert (
            summary.rejected == 1 and summary.errors[0]["row"] == 3 and "not valid JSON" in summary.errors[0]["message"]
        )
    stored = records(fresh_db)
    assert stored["1"]["email"] == "a@b.com"
    assert stored["1"]["address_city"] == "Paris" and stored["1"]["address_country"] == "FR"
    assert json.loads(stored["2"]["traits"]) == {"plan": "pro"}


def test_file_errors_are_clear(fresh_db: CDP, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--format"):
        fresh_db.ingest.import_file(tmp_path / "x.xlsx", source="s", id_column="id")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,name\n1,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="--encoding"):
        fresh_db.ingest.import_file(latin, source="s", id_column="id")
    summary = fresh_db.ingest.import_file(latin, source="s", id_column="id", encoding="latin-1")
    assert summary.inserted == 1
    ragged = write_csv(tmp_path / "ragged.csv", ["id", "email"], [["1", "a@b.com", "extra"], ["2", "c@d.com"]])
    summary = fresh_db.ingest.import_file(ragged, source="s", id_column="id")
    assert summary.inserted == 1 and summary.errors[0]["row"] == 1 and "cells" in summary.errors[0]["message"]


def test_records_api_json_ndjson_gzip_and_partial_failure(server: LiveServer, write_key: str, read_key: str) -> None:
    good = [
        {"source": "hubspot", "external_id": "h1", "email": "x@y.com", "address": {"postal_code": "k1a 0b1"}},
        {"source": "hubspot", "external_id": 2, "first_name": "Bo", "traits": {"lifecycle": "lead"}},
    ]
    with server.client(auth=(write_key, "")) as client:
        response = client.post("/v1/records", json=good)
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == 2
        ndjson = "\n".join(json.dumps({**r, "external_id": f"n{i}"}) for i, r in enumerate(good))
        response = client.post("/v1/records", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        assert response.json()["inserted"] == 2
        response = client.post(
            "/v1/records", content=gzip.compress(json.dumps(good).encode()), headers={"Content-Encoding": "gzip"}
        )
        assert response.json()["unchanged"] == 2
        response = client.post("/v1/records?source=crm", json={"records": [{"external_id": "c1"}]})
        assert response.status_code == 200 and response.json()["inserted"] == 1
        partial = [{"source": "hubspot", "external_id": "ok"}, {"external_id": "no-source"}, {"source": "hubspot"}]
        response = client.post("/v1/records", json=partial)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalid_records"
        assert [(e["row"], e["field"]) for e in body["details"]["errors"]] == [(2, "source"), (3, "external_id")]
        assert client.post("/v1/records", content=b"[{bad").status_code == 400
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/v1/records", json=good).status_code == 401
        assert client.post("/v1/records", json=good, headers={"Authorization": f"Bearer {read_key}"}).status_code == 403
    stored = records(server.cdp)
    assert stored["h1"]["address_postal_code"] == "K1A 0B1"
    assert json.loads(stored["2"]["traits"]) == {"lifecycle": "lead"}
    assert stored["c1"]["source"] == "crm"
    assert "ok" in stored and len(stored) == 6


def test_records_quality_report(fresh_db: CDP, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "sf.csv", HEADER, [*ROWS, ["003D", "Jo", "S", "jon.smyth@gmail.com", "", "", "", "", ""]]
    )
    fresh_db.ingest.import_file(path, source="salesforce", id_column="Id")
    report = fresh_db.quality.report()
    (sf,) = report["records"]
    assert sf["source"] == "salesforce" and sf["records"] == 4 and sf["rejected"] == 1
    assert sf["missing"] == {"Id": 1}
    assert sf["invalid"] == {"birthday": 1, "email": 1, "phone": 1}
    assert sf["completeness"]["email"] == 0.75 and sf["completeness"]["title"] == 0.0
    assert sf["uniqueness"]["records_sharing_an_email"] == 2
