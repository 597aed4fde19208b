"""``cdp backup DEST`` and ``cdp restore BACKUP``: see :mod:`cdp.backup`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cdp.backup import backup, restore
from cdp.settings import Settings


def register(cli: click.Group, db_option: Callable[[Any], Any], settings_for: Callable[..., Settings]) -> None:
    """Add the two commands to ``cli`` (``db_option`` and ``settings_for`` are the CLI's own helpers)."""

    @cli.command("backup")
    @click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace DEST if it exists.")
    @db_option
    def backup_command(dest: Path, force: bool, db: Path | None) -> None:
        """Copy the store to DEST: one consistent snapshot, safe while `cdp serve` ingests.

        DEST is written beside itself first, checked (SQLite integrity_check) and renamed into place, so an
        interrupted backup leaves no partial file. Restore it with `cdp restore DEST`.
        """
        settings = settings_for(db)
        summary = backup(Path(settings.db), dest, overwrite=force)
        click.echo(
            f"backed up {settings.db} to {summary.path}: {summary.bytes / 1e6:.1f} MB, "
            f"{summary.events} events, {summary.seconds:.1f} s (integrity check ok)"
        )

    @cli.command("restore")
    @click.argument("backup_file", metavar="BACKUP", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace a store that exists (stop its server first).")
    @db_option
    def restore_command(backup_file: Path, force: bool, db: Path | None) -> None:
        """Replace the store (--db) with BACKUP, a file made by `cdp backup`, after checking it.

        Stop `cdp serve` on the store first. Without --force an existing store is left alone.
        """
        settings = settings_for(db)
        summary = restore(backup_file, Path(settings.db), overwrite=force)
        click.echo(f"restored {settings.db} from {backup_file}: {summary.events} events (integrity check ok)")
