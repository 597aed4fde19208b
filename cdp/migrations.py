"""Numbered, forward-only schema migrations (``migrations/NNNN_name.sql``).

Each file runs in its own transaction and is recorded in ``schema_migrations``; applying twice
changes nothing. A file that fails leaves the schema as it was before that file. A migration whose rewrite
SQL cannot express names a Python step in `STEPS`: a function run after the file's SQL, in its transaction.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cdp.errors import MigrationEdited, MigrationFailed
from cdp.timeutil import now_iso

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
STEPS = {12: "cdp.identity.rekey:run"}
"""Python steps: version -> ``module:function`` taking the connection (imported only when it runs)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """``cdp/migrations`` inside an installed wheel, else the repository's ``migrations/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationFailed(f"no migrations folder found next to {here}")


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationFailed(f"migration file {path.name!r} must be named NNNN_snake_name.sql")
        found.append(Migration(int(match[1]), match[2], path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationFailed(f"two migration files share a number in {directory}")
    return found


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (triggers with BEGIN ... END stay whole)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()):
        raise MigrationFailed(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")
    return statements


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def applied(conn: sqlite3.Connection) -> dict[int, str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return {row[0]: row[1] for row in conn.execute("SELECT version, name FROM schema_migrations")}


def check_applied(conn: sqlite3.Connection, found: list[Migration]) -> None:
    """Refuse a store whose applied migrations were edited since: the schema it has is not the one the files
    describe. (Migrations are forward-only: a change goes into a new numbered file.)"""
    recorded = {
        v: (name, digest) for v, name, digest in conn.execute("SELECT version, name, checksum FROM schema_migrations")
    }
    for migration in found:
        if migration.version not in recorded:
            continue
        name, digest = recorded[migration.version]
        if digest != checksum(migration.sql):
            raise MigrationEdited(
                f"migration {migration.path.name} was edited after it was applied to this store"
                f" (applied as {migration.version:04d}_{name}.sql, checksum {digest[:12]}); restore the file as it was"
                " and put the change in a new numbered migration",
                {"migration": migration.path.name, "version": migration.version},
            )


def apply(conn: sqlite3.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded, in order; returns those applied now. Refuses (MigrationEdited) a
    store whose applied migrations were edited since."""
    done = applied(conn)
    found = discover(directory)
    ours = directory is None or directory.resolve() == migrations_dir()  # a test's own folder runs no step
    check_applied(conn, found)
    ran: list[Migration] = []
    for migration in found:
        if migration.version in done:
            continue
        sql = migration.sql
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the lock.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            for statement in split_statements(sql):
                conn.execute(statement)
            step = STEPS.get(migration.version) if ours else None
            if step is not None:
                module, _, function = step.partition(":")
                getattr(importlib.import_module(module), function)(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, checksum(sql), now_iso()),
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.Error):
                raise
            raise MigrationFailed(
                f"migration {migration.path.name} failed and was rolled back: {exc}",
                {"migration": migration.path.name},
            ) from exc
        ran.append(migration)
    return ran
