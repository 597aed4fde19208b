"""Backups of the store with SQLite's online backup API: consistent while a server ingests.

Copying ``cdp.db`` with ``cp`` while a server runs is wrong: the last commits live in ``cdp.db-wal`` until a
checkpoint folds them back, and a copy taken between the two files' writes can be torn. ``backup`` reads one
snapshot (a read transaction: writers carry on), writes it to a temporary file beside the destination, checks
it (``PRAGMA integrity_check``), makes it durable and only then renames it to the destination. A backup killed
half-way leaves no destination file at all, never a partial one.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cdp.errors import BackupFailed, InvalidInput


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    bytes: int
    events: int
    seconds: float


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(conn: sqlite3.Connection, what: str) -> int:
    """integrity_check, and that it is a cdp store; the number of events it holds."""
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    if problems != ["ok"]:
        raise BackupFailed(f"{what} fails SQLite's integrity check: {'; '.join(problems[:3])}")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_migrations" not in tables or "events" not in tables:
        raise InvalidInput(f"{what} is not a cdp store (no schema_migrations or events table)")
    return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _remove_stale_partials(destination: Path) -> None:
    """Temporary files of earlier backups to the same name whose process is gone (killed half-way)."""
    for stale in destination.parent.glob(f".{destination.name}.partial-*"):
        pid = stale.name.split(".partial-", 1)[1].split("-", 1)[0]  # also a partial's "-journal" file
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.unlink(missing_ok=True)


def backup(source: Path, destination: Path, *, overwrite: bool = False) -> BackupSummary:
    """Copy the store at ``source`` to ``destination`` (one consistent snapshot; safe while serving)."""
    started = time.monotonic()
    if not source.exists():
        raise InvalidInput(f"there is no store at {source}")
    if destination.resolve() == source.resolve():
        raise InvalidInput("the backup must go to another file than the store itself")
    if destination.exists() and not overwrite:
        raise InvalidInput(f"{destination} exists; choose another name or pass --force to replace it")
    if not destination.parent.is_dir():
        raise InvalidInput(f"the directory {destination.parent} does not exist")
    _remove_stale_partials(destination)
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(partial)) as dst:
            src.execute("PRAGMA busy_timeout=30000")
            src.backup(dst)  # all pages in one step: one read snapshot, writers are not held up
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            events = _check(dst, "the copy")
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, destination)
        _fsync_dir(destination.parent)
    except sqlite3.Error as exc:
        raise BackupFailed(f"the backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return BackupSummary(destination, destination.stat().st_size, events, time.monotonic() - started)


def restore(backup_file: Path, target: Path, *, overwrite: bool = False) -> BackupSummary:
    """Replace the store at ``target`` with the backup (checked first). Stop any server on ``target`` first."""
    started = time.monotonic()
    if not backup_file.exists():
        raise InvalidInput(f"there is no backup at {backup_file}")
    with closing(sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)) as src:
        events = _check(src, str(backup_file))
    if target.exists() and target.stat().st_size > 0 and not overwrite:
        raise InvalidInput(f"{target} exists; pass --force to replace it with the backup (stop its server first)")
    if not target.parent.is_dir():
        raise InvalidInput(f"the directory {target.parent} does not exist")
    try:
        with closing(sqlite3.connect(backup_file)) as src, closing(sqlite3.connect(target, timeout=30)) as dst:
            dst.execute("PRAGMA busy_timeout=30000")
            src.backup(dst)
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            _check(dst, "the restored store")
    except sqlite3.Error as exc:
        raise BackupFailed(f"the restore failed: {exc}") from exc
    return BackupSummary(target, target.stat().st_size, events, time.monotonic() - started)
