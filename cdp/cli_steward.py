"""``cdp identity review|quality|merge|split|undo|labels``: identity stewardship from the terminal.

Registered into the ``identity`` group by `cdp.cli`. ``cdp identity review`` is an interactive loop in
the manner of dedupe's console labeller: it shows one doubtful pair at a time as a table and takes
``y`` (match), ``n`` (no match), ``s`` (skip) or ``q`` (quit), writing each decision as it goes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cdp import record_ids

CLI_KEY = "cli"
"""Who decided, for decisions made from the terminal."""
ANSWERS = {"y": "match", "n": "no_match", "s": "skip"}
_SHOWN = (
    "source", "external_id", "email", "phone", "first_name", "last_name", "birthday", "address_street",
    "address_city", "address_postal_code", "address_country", "company", "title",
)  # fmt: skip


def _pairs(values: tuple[str, ...], keys: tuple[str, str], shape: str, option: str) -> list[dict[str, str]]:
    """``A:B`` option values as ``{keys[0]: A, keys[1]: B}`` (split at the first colon; both parts needed). A
    record (``SOURCE:EXTERNAL_ID``) is read as `cdp.record_ids` writes it: ``%3A`` in the source is a ``:``."""
    pairs = []
    for value in values:
        first, sep, second = value.partition(":")
        if not sep or not first or not second:
            raise click.BadParameter(f"{value!r} is not {shape}", param_hint=option)
        if keys == ("source", "external_id"):
            first = record_ids.decode_source(first)
        pairs.append({keys[0]: first, keys[1]: second})
    return pairs


def _table(item: dict[str, Any]) -> str:
    """Both sides of a review item as a three-column table, then the per-comparison partial weights."""
    left, right = item["left"], item["right"]
    rows: list[tuple[str, str, str]] = []
    for field in _SHOWN:
        lv = left.get(field) if field in ("source", "external_id") else left["fields"].get(field)
        rv = right.get(field) if field in ("source", "external_id") else right["fields"].get(field)
        if lv is not None or rv is not None:
            rows.append((field, "" if lv is None else str(lv), "" if rv is None else str(rv)))
    lp, rp = left.get("profile") or {}, right.get("profile") or {}
    rows.append(("profile", str(lp.get("id", "")), str(rp.get("id", ""))))
    rows.append(("records", str(len(lp.get("records", []))), str(len(rp.get("records", [])))))
    width = [max(len(r[i]) for r in [("field", "left", "right"), *rows]) for i in range(3)]
    width = [min(w, 40) for w in width]
    line = "+".join("-" * (w + 2) for w in width)
    out = [line, " | ".join(h.ljust(width[i]) for i, h in enumerate(("field", "left", "right"))), line]
    out += [" | ".join(str(v)[: width[i]].ljust(width[i]) for i, v in enumerate(r)) for r in rows]
    out.append(line)
    probability = item["match_probability"]
    head = f"reason: {item['reason']}"
    if probability is not None:
        head += f"; match probability {probability:.3f} (threshold {item['threshold']})"
    if item["comparisons"]:
        head += "\npartial weights: " + ", ".join(f"{k} {v:+.2f}" for k, v in item["comparisons"].items())
    if item["message"]:
        head += f"\n{item['message']}"
    return "\n".join(out) + "\n" + head


def add_commands(
    identity: click.Group, db_option: Callable[[Any], Any], open_cdp: Callable[[Path | None], Any],
    echo_json: Callable[[Any], None],
) -> None:  # fmt: skip
    """Add the stewardship commands to the ``identity`` group."""

    @identity.command("review")
    @db_option
    @click.option("--source", default=None, help="Only pairs with a record of this source.")
    @click.option(
        "--reason", type=click.Choice(["below_threshold", "merge_protection", "chaining"]), default=None,
        help="Only pairs kept for this reason.",
    )  # fmt: skip
    @click.option("--limit", type=click.IntRange(1, 100_000), default=None, help="Stop after this many decisions.")
    @click.option("--skipped", is_flag=True, help="Go through the skipped pairs instead of the open ones.")
    def review(db: Path | None, source: str | None, reason: str | None, limit: int | None, skipped: bool) -> None:
        """Label doubtful pairs interactively: y = same person, n = different, s = skip, q = quit.

        Pairs come most informative first (closest to the match threshold). Each answer is stored at once:
        a match merges the two profiles and becomes a must-link, a no-match a cannot-link; every later
        `cdp resolve` and the real-time linker keep them.
        """
        decided = {"match": 0, "no_match": 0, "skip": 0}
        seen: set[int] = set()
        with open_cdp(db) as cdp:
            status = "skipped" if skipped else "open"
            while limit is None or sum(decided.values()) < limit:
                page = cdp.review.page(status=status, reason=reason, source=source, limit=len(seen) + 1).data
                fresh = [i for i in page if i["id"] not in seen]
                if not fresh:
                    click.echo("no more pairs to review")
                    break
                item = fresh[0]
                seen.add(item["id"])
                click.echo(f"\npair {item['id']} ({sum(decided.values()) + 1})")
                click.echo(_table(item))
                answer = click.prompt(
                    "same person? [y]es / [n]o / [s]kip / [q]uit",
                    type=click.Choice(["y", "n", "s", "q"], case_sensitive=False), show_choices=False,
                ).lower()  # fmt: skip
                if answer == "q":
                    break
                decision = ANSWERS[answer]
                result = cdp.review.decide(item["id"], decision, key_id=CLI_KEY)
                decided[decision] += 1
                merged = result.get("merge")
                click.echo(f"{decision}" + (f": merged into {merged['profile_id']}" if merged else ""))
        click.echo(f"decided: {decided['match']} match, {decided['no_match']} no match, {decided['skip']} skipped")

    @identity.command("quality")
    @db_option
    def quality(db: Path | None) -> None:
        """The match threshold measured on the labels: agreement, estimated precision and recall."""
        with open_cdp(db) as cdp:
            echo_json(cdp.identity_quality())

    @identity.command("merge")
    @db_option
    @click.argument("profile_id")
    @click.argument("other")
    @click.option("--note", default=None, help="Why (kept in the audit trail).")
    def merge(db: Path | None, profile_id: str, other: str, note: str | None) -> None:
        """Merge two profiles by hand (the older survives); later runs keep them together."""
        with open_cdp(db) as cdp:
            echo_json(cdp.stewardship.merge(profile_id, other, note=note, key_id=CLI_KEY))

    @identity.command("split")
    @db_option
    @click.argument("profile_id")
    @click.option(
        "--record",
        "records",
        multiple=True,
        metavar="SOURCE:EXTERNAL_ID",
        help="A record to move (a ':' in the source is written %3A, a '%' as %25).",
    )
    @click.option("--identifier", "identifiers", multiple=True, metavar="TYPE:VALUE", help="An identifier to move.")
    @click.option("--note", default=None, help="Why (kept in the audit trail).")
    def split(db: Path | None, profile_id: str, records: tuple[str, ...], identifiers: tuple[str, ...],
              note: str | None) -> None:  # fmt: skip
        """Move records and identifiers of a profile to a new one; later runs keep them apart."""
        parsed_records = _pairs(records, ("source", "external_id"), "SOURCE:EXTERNAL_ID", "--record")
        parsed_ids = _pairs(identifiers, ("type", "value"), "TYPE:VALUE", "--identifier")
        with open_cdp(db) as cdp:
            echo_json(cdp.stewardship.split(profile_id, parsed_records, parsed_ids, note=note, key_id=CLI_KEY))

    @identity.command("undo")
    @db_option
    @click.argument("profile_id")
    def undo(db: Path | None, profile_id: str) -> None:
        """Undo the last manual merge or split of a profile."""
        with open_cdp(db) as cdp:
            echo_json(cdp.stewardship.undo(profile_id, key_id=CLI_KEY))

    @identity.group("labels", cls=type(identity))
    def labels() -> None:
        """Human labels (must-links and cannot-links) in bulk."""

    @labels.command("import")
    @db_option
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    def labels_import(db: Path | None, file: Path) -> None:
        """Import labels from a CSV: source_l,external_id_l,source_r,external_id_r,decision[,note].

        decision is match or no_match; an identifier that is not a CRM record is written with @TYPE as its
        source (@user_id,42). All or nothing: a bad line is named and nothing is stored.
        """
        with open_cdp(db) as cdp:
            counts = cdp.labels.import_file(file, key_id=CLI_KEY)
        click.echo(
            f"{counts['labels']} labels ({counts['match']} match, {counts['no_match']} no match; "
            f"{counts['replaced']} replaced an earlier label); the next `cdp resolve` applies them"
        )

    @labels.command("export")
    @db_option
    @click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="File to write (default: stdout).")  # fmt: skip
    def labels_export(db: Path | None, output: Path | None) -> None:
        """Export every label as CSV (the import format, plus origin, key_id and created_at)."""
        with open_cdp(db) as cdp:
            text = cdp.labels.export_csv()
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            click.echo(f"{max(text.count(chr(10)) - 1, 0)} labels written to {output}", err=True)
