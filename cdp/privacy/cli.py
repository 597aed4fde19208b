"""``cdp privacy ...``: data-subject requests from the command line (run in the foreground, to the end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cdp.cli import Group, db_option, echo_json, open_cdp


def _identifiers(
    user_id: tuple[str, ...], email: tuple[str, ...], phone: tuple[str, ...], anonymous_id: tuple[str, ...],
    record: tuple[str, ...],
) -> list[dict[str, str]]:  # fmt: skip
    given = [("user_id", user_id), ("email", email), ("phone", phone), ("anonymous_id", anonymous_id),
             ("record", record)]  # fmt: skip
    return [{"type": kind, "value": value} for kind, values in given for value in values]


def subject_options(fn: Any) -> Any:
    for name, help_text in reversed(
        [
            ("--user-id", "A user id (repeatable)."),
            ("--email", "An email address (repeatable)."),
            ("--phone", "A phone number (repeatable)."),
            ("--anonymous-id", "An anonymous id (repeatable)."),
            ("--record", "A CRM record as SOURCE:EXTERNAL_ID; a ':' in the source is written %3A (repeatable)."),
        ]
    ):
        fn = click.option(name, multiple=True, help=help_text)(fn)
    return click.option("--profile-id", default=None, help="A profile id instead of identifiers.")(fn)


def _run(db: Path | None, kind: str, profile_id: str | None, **ids: tuple[str, ...]) -> None:
    identifiers = _identifiers(ids["user_id"], ids["email"], ids["phone"], ids["anonymous_id"], ids["record"])
    with open_cdp(db) as cdp:
        result = cdp.privacy.submit(kind, identifiers or None, profile_id, requested_by="cli", background=False)
    echo_json(result)
    if result["status"] == "failed":
        raise click.ClickException(f"the {kind} request {result['id']} failed: {result['error']}")


@click.group(cls=Group)
def privacy() -> None:
    """Data-subject rights: delete, suppress, unsuppress or export a person."""


@privacy.command("delete")
@db_option
@subject_options
def delete(db: Path | None, profile_id: str | None, **ids: tuple[str, ...]) -> None:
    """Erase a person everywhere (the whole resolved profile) and tell webhooks (profile.deleted)."""
    _run(db, "delete", profile_id, **ids)


@privacy.command("suppress")
@db_option
@subject_options
@click.option("--delete", "and_delete", is_flag=True, help="Also erase what is stored (suppress_with_delete).")
def suppress(db: Path | None, profile_id: str | None, and_delete: bool, **ids: tuple[str, ...]) -> None:
    """Stop storing a person's future events and records (acknowledged, not stored)."""
    _run(db, "suppress_with_delete" if and_delete else "suppress", profile_id, **ids)


@privacy.command("unsuppress")
@db_option
@subject_options
def unsuppress(db: Path | None, profile_id: str | None, **ids: tuple[str, ...]) -> None:
    """Lift a suppression (deleted data does not come back)."""
    _run(db, "unsuppress", profile_id, **ids)


@privacy.command("export")
@db_option
@subject_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Copy the export here.")
def export(db: Path | None, profile_id: str | None, output: Path | None, **ids: tuple[str, ...]) -> None:
    """Export everything stored about a person as one JSON document."""
    identifiers = _identifiers(ids["user_id"], ids["email"], ids["phone"], ids["anonymous_id"], ids["record"])
    with open_cdp(db) as cdp:
        result = cdp.privacy.submit("export", identifiers or None, profile_id, requested_by="cli", background=False)
        if result["status"] == "done" and output is not None:
            output.write_bytes(cdp.privacy.download(result["id"]).read_bytes())
            output.chmod(0o600)
    echo_json(result)
    if result["status"] == "failed":
        raise click.ClickException(f"the export request {result['id']} failed: {result['error']}")


@privacy.command("requests")
@db_option
@click.option("--status", type=click.Choice(["pending", "running", "done", "failed"]), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
def requests(db: Path | None, status: str | None, limit: int) -> None:
    """List privacy requests, newest first."""
    with open_cdp(db) as cdp:
        echo_json(cdp.privacy.list_requests(status=status, limit=limit).to_dict())


@privacy.command("show")
@db_option
@click.argument("request_id")
def show(db: Path | None, request_id: str) -> None:
    """One request: status, what was found and removed."""
    with open_cdp(db) as cdp:
        echo_json(cdp.privacy.get(request_id))


@privacy.command("resume")
@db_option
def resume(db: Path | None) -> None:
    """Finish requests a crash interrupted (the server does this when it starts)."""
    with open_cdp(db) as cdp:
        ids = cdp.privacy.resume()
        echo_json([cdp.privacy.get(i) for i in ids])
