"""The store: migrations, pragmas, group commit and job isolation on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cdp import CDP, Settings
from cdp import migrations as mig
from cdp.errors import MigrationEdited, MigrationFailed, StoreClosed
from cdp.store import Store


def test_migrations_apply_once_and_are_recorded(settings: Settings) -> None:
    store = Store(settings)
    first = store.migrate()
    assert [m.version for m in first] == [m.version for m in mig.discover()]
    assert store.migrate() == []
    rows = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows[0] == {"version": 1, "name": "init"}
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "source_records", "api_keys", "quality_counters"} <= tables
    store.close()


def test_pragmas(fresh_db: CDP) -> None:
    conn = fresh_db.store.reader()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == fresh_db.settings.busy_timeout_ms


def test_failing_migration_rolls_back_and_keeps_earlier_ones(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_one.sql").write_text("CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);\n")
    (folder / "0002_two.sql").write_text("CREATE TABLE b (y INTEGER);\nINSERT INTO nope VALUES (1);\n")
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with pytest.raises(MigrationFailed, match=r"0002_two\.sql"):
        mig.apply(conn, folder)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "a" in names and "b" not in names
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations")] == [1]
    (folder / "0002_two.sql").write_text("CREATE TABLE b (y INTEGER);\n")
    assert [m.version for m in mig.apply(conn, folder)] == [2]
    conn.close()


def test_store_with_an_edited_applied_migration_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_one.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (folder / "0002_two.sql").write_text("CREATE TABLE b (y INTEGER);\n")
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert [m.version for m in mig.apply(conn, folder)] == [1, 2]
    (folder / "0002_two.sql").write_text("CREATE TABLE b (y INTEGER, z TEXT);\n")
    (folder / "0003_three.sql").write_text("CREATE TABLE c (z INTEGER);\n")
    with pytest.raises(MigrationEdited, match=r"0002_two\.sql was edited after it was applied"):
        mig.apply(conn, folder)
    assert "c" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()


def test_migration_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationFailed, match="NNNN_snake_name"):
        mig.discover(tmp_path)


def test_split_statements_keeps_triggers_whole() -> None:
    sql = (
        "CREATE TABLE t (x);\n-- comment\nCREATE TRIGGER tr AFTER INSERT ON t BEGIN\n"
        "  UPDATE t SET x = 1;\n  UPDATE t SET x = 2;\nEND;\n"
    )
    statements = mig.split_statements(sql)
    assert len(statements) == 2
    assert "CREATE TRIGGER" in statements[1] and statements[1].endswith("END;")


def test_failing_job_rolls_back_alone(fresh_db: CDP) -> None:
    store = fresh_db.store

    def good(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO quality_counters VALUES ('events', 's', 'n', 'good', 1, 'now')")
        return 1

    def bad(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO quality_counters VALUES ('events', 's', 'n', 'bad', 1, 'now')")
        raise ValueError("boom")

    futures = [store.submit(good), store.submit(bad), store.submit(good)]
    assert futures[0].result() == 1
    with pytest.raises(ValueError, match="boom"):
        futures[1].result()
    with pytest.raises(sqlite3.IntegrityError):
        futures[2].result()  # same primary key as the first: its own failure, not the group's
    metrics = [r["metric"] for r in store.query("SELECT metric FROM quality_counters")]
    assert metrics == ["good"]


def test_closed_store_refuses_writes(settings: Settings) -> None:
    cdp = CDP(settings)
    cdp.close()
    with pytest.raises(StoreClosed):
        cdp.store.write(lambda conn: None)


def test_acknowledged_write_is_visible_to_a_new_connection(fresh_db: CDP) -> None:
    fresh_db.store.write(
        lambda conn: conn.execute("INSERT INTO quality_counters VALUES ('events', 's', 'n', 'm', 7, 'now')")
    )
    other = sqlite3.connect(fresh_db.settings.db)
    try:
        assert other.execute("SELECT value FROM quality_counters").fetchone()[0] == 7
    finally:
        other.close()
