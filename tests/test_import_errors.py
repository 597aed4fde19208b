"""``cdp import records`` with a column the file does not have: an error before any row is read, listing the
file's columns, exit non-zero (the real ``cdp`` script, a real store), for each file format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdp import CDP, Settings
from cdp.errors import MissingColumns

CDP_SCRIPT = Path(sys.executable).with_name("cdp")
ROWS = [{"Email": "ada@example.com", "First Name": "Ada", "City": "London"}]


def _write(path: Path) -> Path:
    if path.suffix == ".csv":
        path.write_text("Email,First Name,City\nada@example.com,Ada,London\n", encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text('[{"Email": "ada@example.com", "First Name": "Ada", "City": "London"}]', encoding="utf-8")
    elif path.suffix == ".ndjson":
        path.write_text('{"Email": "ada@example.com", "First Name": "Ada", "City": "London"}\n', encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


def _records(db: Path) -> int:
    with CDP(Settings(db=db, scheduler_enabled=False)) as cdp:
        return int(cdp.store.query("SELECT count(*) AS n FROM source_records")[0]["n"])


@pytest.mark.parametrize("suffix", [".csv", ".json", ".ndjson", ".parquet"])
def test_a_missing_id_column_is_an_error_that_lists_the_columns(tmp_path: Path, suffix: str) -> None:
    file = _write(tmp_path / f"contacts{suffix}")
    db = tmp_path / "cdp.db"
    result = subprocess.run(
        [str(CDP_SCRIPT), "import", "records", str(file), "--source", "crm", "--id-column", "Id", "--db", str(db)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'Id' (--id-column)" in result.stderr
    assert "its columns are: Email, First Name, City" in result.stderr
    assert "importing" not in result.stderr  # no progress bar: nothing was read
    assert _records(db) == 0


def test_a_missing_map_source_is_an_error_too(tmp_path: Path) -> None:
    file = _write(tmp_path / "contacts.csv")
    db = tmp_path / "cdp.db"
    result = subprocess.run(
        [str(CDP_SCRIPT), "import", "records", str(file), "--source", "crm", "--id-column", "Email",
         "--map", "Town=address.city", "--map", "City=address.city", "--db", str(db)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'Town' (--map Town=address.city)" in result.stderr and "'City'" not in result.stderr.split(";")[0]
    assert _records(db) == 0


def test_the_library_raises_before_reading(fresh_db: CDP, tmp_path: Path) -> None:
    file = _write(tmp_path / "contacts.json")
    with pytest.raises(MissingColumns) as caught:
        fresh_db.ingest.import_file(file, source="crm", id_column="Id")
    assert caught.value.details == {"missing": ["Id"], "columns": ["Email", "First Name", "City"]}
    ok = fresh_db.ingest.import_file(file, source="crm", id_column="Email", mapping={"City": "address.city"})
    assert ok.inserted == 1


def test_values_normalisation_empties_are_reported_per_row(tmp_path: Path) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text(
        "Id,Email,Phone,Birthday\n1,ada@example.com,+44 20 7946 0958,1990-12-10\n2,not-an-email,12,someday\n",
        encoding="utf-8",
    )
    db = tmp_path / "cdp.db"
    args = [str(CDP_SCRIPT), "import", "records", str(file), "--source", "crm", "--id-column", "Id", "--db", str(db)]
    result = subprocess.run([*args, "--json"], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["inserted"] == 2 and summary["rejected"] == 0 and summary["nulled"] == 3
    assert {(w["row"], w["field"], w["value"]) for w in summary["warnings"]} == {
        (2, "email", "not-an-email"),
        (2, "phone", "12"),
        (2, "birthday", "someday"),
    }
    assert all(w["why"] for w in summary["warnings"])
    text = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert "row 2: email 'not-an-email' left empty: not a valid email address" in text.stderr
    assert "0 inserted, 0 updated, 2 unchanged, 0 rejected, 3 values left empty" in text.stdout


def test_reimport_counts_nothing_twice_and_a_rejected_run_leaves_no_source(fresh_db: CDP, tmp_path: Path) -> None:
    file = tmp_path / "contacts.csv"
    file.write_text("Id,Email\n1,ada@example.com\n2,not-an-email\n3,also-bad\n", encoding="utf-8")
    for _ in range(3):
        fresh_db.ingest.import_file(file, source="crm", id_column="Id")
    crm = next(r for r in fresh_db.quality.report()["records"] if r["source"] == "crm")
    assert crm["records"] == 3 and crm["invalid"] == {"email": 2}
    assert crm["completeness"]["email"] == round(1 / 3, 4)

    empty = tmp_path / "empty_ids.csv"
    empty.write_text("Id,Email\n,ada@example.com\n,grace@example.com\n", encoding="utf-8")
    summary = fresh_db.ingest.import_file(empty, source="newcrm", id_column="Id")
    assert summary.rejected == 2 and [e["row"] for e in summary.errors] == [1, 2]
    assert [r["source"] for r in fresh_db.quality.report()["records"]] == ["crm"]
    again = fresh_db.ingest.import_file(empty, source="crm", id_column="Id")  # a known source keeps the count
    assert again.rejected == 2
    crm = next(r for r in fresh_db.quality.report()["records"] if r["source"] == "crm")
    assert crm["rejected"] == 2 and crm["records"] == 3
