"""The ``cdp`` command line: a thin layer over the library (see ``cdp --help``)."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from cdp import cli_backup
from cdp.core import CDP
from cdp.errors import CDPError
from cdp.settings import Settings
from cdp.store import checkpoint_opened_stores
from cdp.textsafe import clean

F = TypeVar("F", bound=Callable[..., Any])


class Group(click.Group):
    """Turns library errors into a one-line reason on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CDPError as exc:
            raise click.ClickException(clean(exc.message)) from exc
        except sqlite3.Error as exc:  # the store failed under the command (read-only, disk full, locked)
            raise click.ClickException(clean(f"the store failed: {exc}")) from exc


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="SQLite file (default: $CDP_DB, else ./cdp.db).",
    )(fn)


def settings_for(db: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment (``CDP_*``, ``.env``) and the options; a bad value is a one-line error."""
    if db is not None:
        overrides["db"] = db
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            named = f"{where} (CDP_{where.upper()}): " if where else ""
            got = f", got {error['input']!r}" if where and "input" in error else ""
            problems.append(f"{named}{error['msg'].removeprefix('Value error, ')}{got}")
        raise click.ClickException("invalid settings: " + "; ".join(problems)) from exc


def open_cdp(db: Path | None) -> CDP:
    return CDP(settings_for(db))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cdp")
def cli() -> None:
    """cdp: an embedded customer data platform over one SQLite file."""


# -- serve / migrate ---------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8000).")
@click.option("--no-scheduler", is_flag=True, help="Do not run scheduled jobs in this process.")
@click.option("--dev-keys", is_flag=True, help="Print a write and a read key for local use (kept in DB.dev-keys.json).")
@click.option("--log-level", default="info", show_default=True)
def serve(
    db: Path | None, host: str | None, port: int | None, no_scheduler: bool, dev_keys: bool, log_level: str
) -> None:
    """Run the HTTP API (and the scheduler)."""
    import uvicorn

    from cdp import memory
    from cdp.memwatch import MemoryWatch
    from cdp.sample import dev_keys as make_dev_keys
    from cdp.server import create_app

    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if no_scheduler:
        overrides["scheduler_enabled"] = False
    settings = settings_for(db, **overrides)
    if settings.ingest_writer == "auto":
        settings = settings.model_copy(update={"ingest_writer": "process"})
    cdp = CDP(settings)
    url = f"http://{settings.host}:{settings.port}"
    click.echo(f"cdp is serving {url}")
    click.echo(f"  console:     {url}/console   (sign in with a read or admin token)")
    click.echo(f"  API docs:    {url}/docs")
    click.echo(f"  store:       {settings.db}")
    click.echo(f"  cdp command: {Path(sys.argv[0]).resolve()}   (or `source .venv/bin/activate` in a checkout)")
    if dev_keys:
        keys = make_dev_keys(cdp, Path(f"{settings.db}.dev-keys.json"))
        click.echo(f"  write key:   {keys['write']}   (SDKs: host/apiHost {url}, HTTP Basic username)")
        click.echo(f"  read token:  {keys['read']}   (Authorization: Bearer <this>; /docs Authorize)")
        click.echo(f"  admin token: {keys['admin']}   (segments, webhooks: Authorization: Bearer <this>)")
        click.echo(f"  (kept in {settings.db}.dev-keys.json, reused next time; for the README's examples, paste:)")
        click.echo(f"  export WRITE_KEY={keys['write']} READ_TOKEN={keys['read']} ADMIN_TOKEN={keys['admin']}")
    key_problem = cdp.webhooks.key_problem()
    if key_problem:
        click.echo(key_problem, err=True)
    access = logging.getLogger("cdp.access")
    if settings.access_log and log_level.lower() in ("trace", "debug", "info") and not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    memory.configure()
    if settings.tracemalloc_seconds:
        MemoryWatch(settings.tracemalloc_seconds, "server").start()
    app = create_app(cdp=cdp, scheduler=settings.scheduler_enabled)
    # Everything loaded so far (FastAPI, pydantic models, the identity cache's start) lives as long
    # as the process: out of the collector's sight, full collections scan only what ingest allocates
    # (they took ~15% of the server's CPU at ingest, walking the whole heap).
    gc.collect()
    gc.freeze()
    # A /v1/batch body parses into thousands of containers that live until its request ends: with the
    # default threshold (700) young collections run several times per request and promote them all.
    gc.set_threshold(20_000, 10, 10)
    # uvicorn sends a SIGTERM it caught back to the process once it has stopped: with the default handler the
    # process would die there, before the writer child is stopped and the WAL folded. This handler lets
    # `cdp serve` return only after that (the exit status is 0, as for Ctrl+C).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            http="httptools",
            loop="uvloop",
            access_log=False,
        )
    finally:
        cdp.close()


@cli.command()
@db_option
@click.option("--create", is_flag=True, help="Create the store's directory if it does not exist.")
def migrate(db: Path | None, create: bool) -> None:
    """Apply pending schema migrations (also done at every start)."""
    cdp = CDP(settings_for(db, **({"create_dirs": True} if create else {})), migrate=False)
    try:
        ran = cdp.store.migrate()
    finally:
        cdp.close()
    if ran:
        for migration in ran:
            click.echo(f"applied {migration.path.name}")
    else:
        click.echo("schema is up to date")


# -- keys --------------------------------------------------------------------------------------------


@cli.group(cls=Group)
def keys() -> None:
    """Write keys (ingest) and API tokens (read, admin)."""


@keys.command("create")
@db_option
@click.option("--kind", type=click.Choice(["write", "read", "admin"]), required=True)
@click.option("--name", default=None, help="A label; for write keys, the source name events are filed under.")
def keys_create(db: Path | None, kind: str, name: str | None) -> None:
    """Make a key. The key is printed once, alone on the last line."""
    with open_cdp(db) as cdp:
        info, secret = cdp.keys.create(kind, name)
    click.echo(f"created {info.kind} key {info.id} ({info.name}); it is shown only now:", err=False)
    click.echo(secret)


@keys.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(db: Path | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    with open_cdp(db) as cdp:
        found = cdp.keys.list()
    if as_json:
        echo_json([info.__dict__ for info in found])
        return
    click.echo(f"{'ID':<18} {'KIND':<6} {'NAME':<20} {'PREFIX':<9} {'CREATED':<25} {'LAST USED':<25} STATUS")
    for info in found:
        status = "active" if info.active else f"revoked {info.revoked_at}"
        click.echo(
            f"{info.id:<18} {info.kind:<6} {info.name[:20]:<20} {info.prefix:<9} {info.created_at:<25} "
            f"{info.last_used_at or '-':<25} {status}"
        )


@keys.command("revoke")
@db_option
@click.argument("key_id")
def keys_revoke(db: Path | None, key_id: str) -> None:
    """Revoke a key by its id (see `cdp keys list`)."""
    with open_cdp(db) as cdp:
        info = cdp.keys.revoke(key_id)
    click.echo(f"revoked {info.id} at {info.revoked_at}")


# -- import ------------------------------------------------------------------------------------------


@cli.group("import", cls=Group)
def import_() -> None:
    """Bulk imports."""


def _parse_maps(values: tuple[str, ...]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for value in values:
        src, sep, target = value.rpartition("=")
        if not sep or not src or not target:
            raise click.BadParameter(f"{value!r} must look like SOURCE_COLUMN=field", param_hint="--map")
        mapping[src] = target.strip()
    return mapping


@import_.command("records")
@db_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", required=True, help="Where the records come from, e.g. salesforce.")
@click.option("--id-column", required=True, help="Column holding each record's id in that source.")
@click.option("--map", "maps", multiple=True, metavar="COL=FIELD", help="Map a column to a field (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "ndjson", "parquet"]), default=None)
@click.option("--encoding", default="utf-8-sig", show_default=True, help="Text encoding of CSV/NDJSON files.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def import_records(
    db: Path | None,
    file: Path,
    source: str,
    id_column: str,
    maps: tuple[str, ...],
    fmt: str | None,
    encoding: str,
    as_json: bool,
) -> None:
    """Import CRM records (CSV, JSON, NDJSON, Parquet); re-importing updates them."""
    from cdp.ingest import files

    mapping = _parse_maps(maps)
    with open_cdp(db) as cdp:
        fmt = files.detect_format(file, fmt)
        files.check_columns(file, fmt, id_column=id_column, mapping=mapping, encoding=encoding)
        total = files.count_rows(file, fmt)
        bar: Any
        with click.progressbar(length=total, label=f"importing {file.name}", file=sys.stderr, show_pos=True) as bar:
            summary = cdp.ingest.import_file(
                file,
                source=source,
                id_column=id_column,
                mapping=mapping,
                fmt=fmt,
                encoding=encoding,
                progress=bar.update,
            )
        cdp.refresh_personas()  # titles that arrived or changed get their persona now
    if as_json:
        echo_json(summary.to_dict())
    else:
        for column, target in sorted(summary.auto_mapped.items()):
            click.echo(f"  column {column!r} read as {target}")
        for error in summary.errors[:20]:
            click.echo(f"  row {error['row']}: {error['message']}", err=True)
        if summary.rejected > 20:
            click.echo(f"  ... and {summary.rejected - 20} more rejected rows (use --json for all)", err=True)
        for warning in summary.warnings[:20]:
            click.echo(
                f"  row {warning['row']}: {warning['field']} {warning['value']!r} left empty: {warning['why']}",
                err=True,
            )
        if summary.nulled > 20:
            click.echo(f"  ... and {summary.nulled - 20} more values left empty (use --json for all)", err=True)
        nulled = f", {summary.nulled} values left empty" if summary.nulled else ""
        click.echo(
            f"{summary.received} rows: {summary.inserted} inserted, {summary.updated} updated, "
            f"{summary.unchanged} unchanged, {summary.rejected} rejected{nulled}"
        )


# -- events ------------------------------------------------------------------------------------------


@cli.group(cls=Group)
def events() -> None:
    """Raw events as they arrived."""


def _event_line(event: dict[str, Any]) -> str:
    who = event.get("userId") or f"anon:{event.get('anonymousId')}"
    what = event.get("event") or event.get("name") or ""
    flags = f"  flags={','.join(event['qualityFlags'])}" if event.get("qualityFlags") else ""
    # Names and ids come from clients: control and bidi characters are shown escaped, never sent to the terminal.
    return clean(f"{event['receivedAt']}  {event['type']:<8} {what:<24} {who:<28} {event['source']}{flags}")


@events.command("tail")
@db_option
@click.option("-n", "--lines", default=20, show_default=True, help="How many recent events to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they arrive (Ctrl-C stops).")
@click.option("--user-id", default=None)
@click.option("--anonymous-id", default=None)
@click.option("--event", "event_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between polls with --follow.")
def events_tail(
    db: Path | None,
    lines: int,
    follow: bool,
    user_id: str | None,
    anonymous_id: str | None,
    event_name: str | None,
    as_json: bool,
    interval: float,
) -> None:
    """Show the latest events, like Segment's source debugger."""
    filters: dict[str, Any] = {"user_id": user_id, "anonymous_id": anonymous_id, "event": event_name}

    def show(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event, default=str) if as_json else _event_line(event))

    with open_cdp(db) as cdp:
        last = 0
        if lines > 0:
            page = cdp.events.list(limit=min(lines, 1000), **filters)
            for event in reversed(page.data):
                show(event)
            last = page.data[0]["id"] if page.data else cdp.events.latest_id()
        else:
            last = cdp.events.latest_id()
        while follow:
            try:
                time.sleep(interval)
                page = cdp.events.list(limit=1000, after_id=last, **filters)
            except KeyboardInterrupt:
                break
            for event in page.data:
                show(event)
                last = event["id"]


# -- quality -----------------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="The full report as JSON.")
def quality(db: Path | None, as_json: bool) -> None:
    """Data quality per source and event name."""
    with open_cdp(db) as cdp:
        report = cdp.quality.report()
    if as_json:
        echo_json(report)
        return
    click.echo("EVENTS")
    click.echo(
        f"  {'SOURCE':<16} {'EVENT':<24} {'RECEIVED':>9} {'STORED':>8} {'DUPES':>6} {'REJECTED':>9} "
        f"{'SKEWED':>7}  PROBLEMS"
    )
    for row in report["events"]:
        problems = ", ".join(
            [f"missing {k}: {v}" for k, v in row["missing"].items()]
            + [f"invalid {k}: {v}" for k, v in row["invalid"].items()]
            + ([f"suppressed: {row['suppressed']}"] if row.get("suppressed") else [])
        )
        click.echo(
            f"  {row['source'][:16]:<16} {row['event'][:24]:<24} {row['received']:>9} {row['stored']:>8} "
            f"{row['duplicates_dropped']:>6} {row['rejected']:>9} {row['clock_skew']['skewed_messages']:>7}  "
            f"{problems}"
        )
    click.echo("RECORDS")
    for row in report["records"]:
        completeness = ", ".join(f"{k} {v:.0%}" for k, v in row.get("completeness", {}).items())
        invalid = ", ".join(f"{k}: {v}" for k, v in row["invalid"].items()) or "none"
        click.echo(
            f"  {row['source']}: {row.get('records', 0)} records, {row['rejected']} rejected, invalid {invalid}; "
            f"sharing an email: {row.get('uniqueness', {}).get('records_sharing_an_email', 0)}"
            + (f"; suppressed: {row['suppressed']}" if row.get("suppressed") else "")
        )
        click.echo(f"    completeness: {completeness}")


# -- identity ----------------------------------------------------------------------------------------


@cli.command()
@db_option
@click.option("--retrain/--no-retrain", default=None, help="Force or forbid retraining the match model.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def resolve(db: Path | None, retrain: bool | None, as_json: bool) -> None:
    """Run full identity resolution: score all records, re-cluster, keep profile ids stable."""
    with open_cdp(db) as cdp:
        result = cdp.identity.run(retrain=retrain, progress=lambda m: click.echo(m, err=True))
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"{result['profiles']} profiles; {result['merges']} merges, {result['splits']} splits, "
            f"{result['new_profiles']} new, {result['match_edges']} match edges, "
            f"model v{result['model_version']}; {result['seconds']}s"
        )


@cli.group(cls=Group)
def identity() -> None:
    """The probabilistic match model, its evaluation, and stewardship (review, merge, split, labels)."""


@identity.command("train")
@db_option
def identity_train(db: Path | None) -> None:
    """Retrain the match model on the current records and store it as a new version."""
    with open_cdp(db) as cdp:
        version, model = cdp.identity.train()
    click.echo(f"model v{version}: trained on {model.trained_rows} rows, threshold {model.threshold}")
    echo_json(model.metrics)


@identity.command("model")
@db_option
@click.option("--json", "as_json", is_flag=True)
def identity_model(db: Path | None, as_json: bool) -> None:
    """Show the match model in use: trained or default, its threshold and how it was chosen."""
    with open_cdp(db) as cdp:
        found = cdp.identity.describe_model()
    if as_json:
        echo_json(found)
        return
    click.echo(f"model v{found['version']} ({found['kind']}), {found['trained_rows']} rows, made {found['created_at']}")
    click.echo(f"threshold {found['threshold']}: {found['threshold_reason']}")
    for comparison in found["comparisons"]:
        levels = ", ".join(f"{lv['level']} {lv['weight']:+.1f}" for lv in comparison["levels"])
        click.echo(f"  {comparison['comparison']}: {levels}")


@identity.command("evaluate")
@db_option
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV with columns source, external_id, entity.",
)
@click.option("--json", "as_json", is_flag=True)
def identity_evaluate(db: Path | None, truth: Path, as_json: bool) -> None:
    """Score the current profiles against ground truth."""
    with open_cdp(db) as cdp:
        result = cdp.identity.evaluate(truth)
    if as_json:
        echo_json(result)
        return
    pw, b3 = result["pairwise"], result["b_cubed"]
    click.echo(f"records scored: {result['records']} (missing from the store: {result['records_missing']})")
    click.echo(f"pairwise  precision {pw['precision']:.4f}  recall {pw['recall']:.4f}  F1 {pw['f1']:.4f}")
    click.echo(f"B-cubed   precision {b3['precision']:.4f}  recall {b3['recall']:.4f}  F1 {b3['f1']:.4f}")
    click.echo(
        f"adjusted Rand {result['adjusted_rand']:.4f}; clusters {result['clusters']['predicted']} "
        f"(true {result['clusters']['true']})"
    )


from cdp.cli_steward import add_commands as _add_stewardship  # noqa: E402

_add_stewardship(identity, db_option, open_cdp, echo_json)


# -- segments --------------------------------------------------------------------------------------


@cli.group(cls=Group)
def segments() -> None:
    """Segments (rules, clusters, propensity scores): define, compute, list members."""


@segments.command("create")
@db_option
@click.argument("file", type=click.File("rb"))
@click.option("--replace", is_flag=True, help="Replace the segment if the key exists.")
def segments_create(db: Path | None, file: Any, replace: bool) -> None:
    """Create a segment from a JSON definition file (- for stdin)."""
    import orjson

    from cdp.errors import InvalidJSON, SegmentExists

    try:
        definition = orjson.loads(file.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"{file.name} is not valid JSON: {exc}") from exc
    with open_cdp(db) as cdp:
        try:
            segment = cdp.segments.create(definition)
        except SegmentExists:
            if not replace:
                raise
            segment = cdp.segments.update(definition["key"], definition)
    click.echo(f"segment {segment['key']} saved ({segment['name']})")


@segments.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def segments_list(db: Path | None, as_json: bool) -> None:
    """List segments with their sizes."""
    with open_cdp(db) as cdp:
        found = []
        cursor = None
        while True:
            page = cdp.segments.list(limit=1000, cursor=cursor)
            found += page.data
            if not page.next:
                break
            cursor = page.next
    if as_json:
        echo_json(found)
        return
    click.echo(f"{'KEY':<28} {'SIZE':>9}  {'SCHEDULE':<18} NAME")
    for seg in found:
        schedule = seg["schedule"]
        when = (schedule.get("every") or schedule.get("cron")) if schedule else "on demand"
        click.echo(f"{seg['key'][:28]:<28} {seg['size']:>9}  {when:<18} {seg['name']}")


@segments.command("show")
@db_option
@click.argument("key")
def segments_show(db: Path | None, key: str) -> None:
    """A segment's definition, size and recent runs."""
    with open_cdp(db) as cdp:
        segment = cdp.segments.get(key)
        segment["history"] = cdp.segments.history(key, limit=10).data
    echo_json(segment)


@segments.command("compute")
@db_option
@click.argument("key", required=False)
@click.option("--all", "all_", is_flag=True, help="Compute every rule segment, dependencies first.")
def segments_compute(db: Path | None, key: str | None, all_: bool) -> None:
    """Recompute one segment (or --all) now."""
    if bool(key) == all_:
        raise click.UsageError("give a segment KEY or --all")
    with open_cdp(db) as cdp:
        keys = None if all_ else [key or ""]
        bar: Any
        count = len([s for s in cdp.segments.list(limit=1000).data if not s["parent"]]) if all_ else 1
        with click.progressbar(length=count, label="computing", file=sys.stderr) as bar:
            results = cdp.segments.compute_many(keys, progress=lambda r: bar.update(1))
    failed = 0
    for result in results:
        if result.status == "failed":
            failed += 1
            click.echo(f"{result.segment_key}: FAILED: {result.error}", err=True)
        elif result.status == "not_predictive":
            click.echo(f"{result.segment_key}: NOT PREDICTIVE, {result.size} members kept: {result.note}", err=True)
        else:
            click.echo(
                f"{result.segment_key}: {result.size} members (+{result.entered} -{result.exited}) "
                f"in {result.duration_ms} ms"
            )
            if result.note:
                click.echo(f"{result.segment_key}: {result.note}", err=True)
    if failed:
        raise click.ClickException(f"{failed} segment run(s) failed; previous members were kept")


@segments.command("members")
@db_option
@click.argument("key")
@click.option("--limit", default=100, show_default=True, help="How many (0 for all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON member per line.")
@click.option("--traits", default=None, help="Comma-separated traits to show, e.g. email,first_name (max 20).")
def segments_members(db: Path | None, key: str, limit: int, as_json: bool, traits: str | None) -> None:
    """List a segment's members with their identifiers (and chosen traits)."""
    with open_cdp(db) as cdp:
        shown, cursor = 0, None
        while True:
            size = 1000 if limit == 0 else min(limit - shown, 1000)
            page = cdp.segments.members(key, limit=size, cursor=cursor, traits=traits)
            for member in page.data:
                if as_json:
                    click.echo(json.dumps(member))
                else:
                    ids = ", ".join(f"{i['type']}={i['value']}" for i in member["identifiers"][:4])
                    picked = "  ".join(f"{k}={v}" for k, v in member.get("traits", {}).items())
                    click.echo(f"{member['profile_id']}  entered {member['entered_at']}  {ids}  {picked}".rstrip())
            shown += len(page.data)
            if not page.next or (limit and shown >= limit):
                break
            cursor = page.next


def _picture_format(target: Path) -> str:
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise click.BadParameter(f"{target.name}: the file must end in .png or .svg", param_hint="FILE")
    return fmt


@segments.command("plot")
@db_option
@click.argument("key")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="PNG or SVG file (default KEY.png)."
)
@click.option("--profiles", is_flag=True, help="Each cluster's feature averages in original units instead.")
def segments_plot(db: Path | None, key: str, output: Path | None, profiles: bool) -> None:
    """Draw a cluster segment's clusters on the two features that set them apart most, with each cluster's name,
    size and share (or, with --profiles, each cluster's averages beside everyone's)."""
    target = output or Path(f"{key}.png")
    fmt = _picture_format(target)
    with open_cdp(db) as cdp:
        picture = cdp.segments.plot(key, fmt, "profiles" if profiles else "clusters")
    target.write_bytes(picture)
    click.echo(f"wrote {target} ({len(picture)} bytes)")


@segments.command("model")
@db_option
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The whole model summary as JSON (for scripts).")
def segments_model(db: Path | None, key: str, as_json: bool) -> None:
    """A machine-learned segment's model: its clusters (name, size, share, what sets each apart in original units)
    or its propensity quality and top features."""
    from cdp.segments.charts import model_table

    with open_cdp(db) as cdp:
        model = cdp.segments.model(key)
    if as_json:
        click.echo(json.dumps(model, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(model_table(model))


@segments.command("history")
@db_option
@click.argument("key")
@click.option("--limit", default=20, show_default=True, help="How many recent runs to list.")
@click.option(
    "--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path), help="Also draw size over time (.png/.svg)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON run per line.")
def segments_history(db: Path | None, key: str, limit: int, plot_file: Path | None, as_json: bool) -> None:
    """A segment's runs, newest first: size, entered, exited, status and notes; --plot draws size over time."""
    fmt = _picture_format(plot_file) if plot_file else None
    with open_cdp(db) as cdp:
        runs = cdp.segments.history(key, limit=max(1, min(limit, 1000))).data
        picture = cdp.segments.history_chart(key, fmt) if fmt else None
    if as_json:
        for run in runs:
            click.echo(json.dumps(run))
    else:
        click.echo(f"{'FINISHED':<25} {'TRIGGER':<10} {'STATUS':<15} {'SIZE':>8} {'IN':>7} {'OUT':>7}  NOTE")
        for run in runs:
            size = "" if run["size"] is None else f"{run['size']:,}"
            click.echo(
                f"{run['finished_at']:<25} {run['trigger']:<10} {run['status']:<15} {size:>8} {run['entered']:>7,}"
                f" {run['exited']:>7,}  {run.get('note') or run.get('error') or ''}"
            )
    if plot_file is not None and picture is not None:
        plot_file.write_bytes(picture)
        click.echo(f"wrote {plot_file} ({len(picture)} bytes)", err=as_json)


# -- personas --------------------------------------------------------------------------------------


@cli.group(cls=Group)
def personas() -> None:
    """Job-title personas: label titles, and a classifier labels the rest (traits persona, persona_confidence)."""


def _print_status(status: dict[str, Any]) -> None:
    model = status.get("model") or {}
    accuracy = model.get("cv_accuracy")
    shown = "n/a (label at least two titles of every persona)" if accuracy is None else f"{accuracy:.3f}"
    click.echo(f"{status['labels']} labels; personas: {status['personas']}; cross-validated accuracy {shown}")


@personas.command("label")
@db_option
@click.option("--title", help="A job title to label (with --persona).")
@click.option("--persona", help="Its persona.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with columns title,persona.")  # fmt: skip
@click.option("-n", "count", default=20, show_default=True, help="Titles to offer in the interactive loop.")
def personas_label(db: Path | None, title: str | None, persona: str | None, file: Path | None, count: int) -> None:
    """Label titles: one (--title/--persona), a CSV (--file), or interactively: the titles the model is least
    sure of are offered one by one; type a persona, Enter to skip, q to stop. The model retrains after each."""
    import csv

    from cdp.ml.personas import Label, check_labels

    with open_cdp(db) as cdp:
        if title or persona:
            if not (title and persona):
                raise click.UsageError("give --title and --persona together")
            _print_status(cdp.personas.label(check_labels({"title": title, "persona": persona})))
            return
        if file:
            with file.open(newline="", encoding="utf-8") as handle:
                rows = [{"title": r.get("title"), "persona": r.get("persona")} for r in csv.DictReader(handle)]
            _print_status(cdp.personas.label(check_labels(rows)))
            return
        known = sorted(cdp.personas.status()["personas"])
        click.echo(f"personas so far: {', '.join(known) if known else '(none yet: type new ones)'}")
        for entry in cdp.personas.uncertain(count):
            guess = f" [model: {entry['persona']} {entry['confidence']:.2f}]" if entry.get("persona") else ""
            answer = click.prompt(
                f"{entry['title']!r} ({entry['profiles']} profiles){guess}", default="", show_default=False
            ).strip()
            if answer.lower() == "q":
                break
            if not answer:
                continue
            _print_status(cdp.personas.label([Label(entry["title"], answer)]))


@personas.command("uncertain")
@db_option
@click.option("-n", "count", default=20, show_default=True)
def personas_uncertain(db: Path | None, count: int) -> None:
    """The titles the model is least sure of (label these next)."""
    with open_cdp(db) as cdp:
        for entry in cdp.personas.uncertain(count):
            guess = f"{entry['persona']} ({entry['confidence']:.2f})" if entry.get("persona") else "-"
            click.echo(f"{entry['profiles']:>7}  {guess:<24} {entry['title']}")


@personas.command("status")
@db_option
@click.option("--json", "as_json", is_flag=True)
def personas_status(db: Path | None, as_json: bool) -> None:
    """Labels per persona and the model's accuracy as labels grew."""
    with open_cdp(db) as cdp:
        status = cdp.personas.status()
    if as_json:
        echo_json(status)
        return
    _print_status(status)
    for point in status["accuracy_history"]:
        click.echo(f"  {point['trained_at']}  {point['labels']:>5} labels  accuracy {point['cv_accuracy']}")


# -- webhooks --------------------------------------------------------------------------------------


@cli.group(cls=Group)
def webhooks() -> None:
    """Webhook subscriptions: signed notifications of segment entries, exits and profile merges."""


def _webhook_line(hook: dict[str, Any]) -> str:
    state = "enabled" if hook["enabled"] else f"disabled ({hook['disabled_reason']})"
    segments = ",".join(hook["segments"]) if hook["segments"] else "all segments"
    return f"{hook['id']}  {state:<20} {','.join(hook['events'])}  [{segments}]  {hook['url']}"


@webhooks.command("create")
@db_option
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(["segment.entered", "segment.exited", "profile.merged", "profile.split", "profile.deleted"]),
    help="Event type to receive (repeatable; default: all).",
)
@click.option("--segment", "segments", multiple=True, help="Segment key to receive (repeatable; default: all).")
@click.option("--description", default=None)
@click.option(
    "--trait", "traits", multiple=True, help="Trait to carry in segment payloads, e.g. email (repeatable; max 20)."
)
def webhooks_create(
    db: Path | None,
    url: str,
    events: tuple[str, ...],
    segments: tuple[str, ...],
    description: str | None,
    traits: tuple[str, ...],
) -> None:
    """Subscribe URL. The signing secret is printed once, alone on the last line."""
    with open_cdp(db) as cdp:
        hook = cdp.webhooks.create(
            url, list(events) or None, list(segments) or None, description, traits=list(traits) or None
        )
    click.echo(f"created webhook {hook['id']} -> {hook['url']}; its signing secret is shown only now:")
    click.echo(hook["secret"])


@webhooks.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True)
def webhooks_list(db: Path | None, as_json: bool) -> None:
    """List webhooks (never their secrets)."""
    with open_cdp(db) as cdp:
        found, cursor = [], None
        while True:
            page = cdp.webhooks.list(limit=1000, cursor=cursor)
            found += page.data
            if not page.next:
                break
            cursor = page.next
    if as_json:
        echo_json(found)
        return
    for hook in found:
        click.echo(_webhook_line(hook))


@webhooks.command("update")
@db_option
@click.argument("webhook_id")
@click.option("--url", default=None)
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(["segment.entered", "segment.exited", "profile.merged", "profile.split", "profile.deleted"]),
    help="Replace the event types (repeatable).",
)
@click.option("--segment", "segments", multiple=True, help="Replace the segment keys (repeatable).")
@click.option("--all-segments", is_flag=True, help="Receive every segment's notifications.")
@click.option("--description", default=None)
@click.option("--enable/--disable", "enabled", default=None, help="Resume or pause deliveries.")
def webhooks_update(
    db: Path | None,
    webhook_id: str,
    url: str | None,
    events: tuple[str, ...],
    segments: tuple[str, ...],
    all_segments: bool,
    description: str | None,
    enabled: bool | None,
) -> None:
    """Change a webhook's URL or filters, or enable / disable it."""
    if segments and all_segments:
        raise click.UsageError("give --segment or --all-segments, not both")
    changes: dict[str, Any] = {}
    if url is not None:
        changes["url"] = url
    if events:
        changes["events"] = list(events)
    if segments or all_segments:
        changes["segments"] = list(segments) if segments else None
    if description is not None:
        changes["description"] = description
    if enabled is not None:
        changes["enabled"] = enabled
    with open_cdp(db) as cdp:
        hook = cdp.webhooks.update(webhook_id, changes)
    click.echo(_webhook_line(hook))


@webhooks.command("delete")
@db_option
@click.argument("webhook_id")
def webhooks_delete(db: Path | None, webhook_id: str) -> None:
    """Delete a webhook and its delivery history."""
    with open_cdp(db) as cdp:
        cdp.webhooks.delete(webhook_id)
    click.echo(f"deleted {webhook_id}")


@webhooks.command("rotate-secret")
@db_option
@click.argument("webhook_id")
@click.option("--overlap", type=float, default=None, help="Seconds the previous secret keeps signing (default 1 day).")
def webhooks_rotate_secret(db: Path | None, webhook_id: str, overlap: float | None) -> None:
    """New signing secret, printed once on the last line; the previous one signs too during the overlap."""
    with open_cdp(db) as cdp:
        hook = cdp.webhooks.rotate_secret(webhook_id, overlap)
    until = hook["previous_secret_expires_at"]
    click.echo(f"rotated; the previous secret signs too until {until}" if until else "rotated")
    click.echo(hook["secret"])


@webhooks.command("test")
@db_option
@click.argument("webhook_id")
def webhooks_test(db: Path | None, webhook_id: str) -> None:
    """Send a ping now and show the answer."""
    with open_cdp(db) as cdp:
        delivery = cdp.webhooks.test(webhook_id)
    attempt = delivery["attempts"][-1]
    answer = attempt["status_code"] or attempt["error"]
    click.echo(f"ping {delivery['message_id']}: {answer} in {attempt['latency_ms']} ms")
    if delivery["status"] != "succeeded":
        raise click.ClickException(f"the ping was not accepted ({answer}); the dispatcher will retry it")


@webhooks.command("deliveries")
@db_option
@click.argument("webhook_id")
@click.option("--status", type=click.Choice(["pending", "succeeded", "failed"]), default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON delivery (with its attempts) per line.")
def webhooks_deliveries(db: Path | None, webhook_id: str, status: str | None, limit: int, as_json: bool) -> None:
    """Recent messages to a webhook, newest first, with each attempt."""
    with open_cdp(db) as cdp:
        page = cdp.webhooks.deliveries(webhook_id, status=status, limit=max(1, min(limit, 1000)))
    for delivery in page.data:
        if as_json:
            click.echo(json.dumps(delivery))
            continue
        nxt = f"  next {delivery['next_attempt_at']}" if delivery["status"] == "pending" else ""
        click.echo(
            f"{delivery['created_at']}  {delivery['message_id']}  {delivery['type']:<16} {delivery['status']}{nxt}"
        )
        for attempt in delivery["attempts"]:
            answer = attempt["status_code"] or attempt["error"]
            click.echo(f"    #{attempt['attempt']} {attempt['at']}  {answer}  {attempt['latency_ms']} ms")


@webhooks.command("replay")
@db_option
@click.argument("webhook_id")
@click.option("--message-id", default=None, help="Send this message again.")
@click.option("--since", default=None, help="Send every failed message since this ISO-8601 time again.")
def webhooks_replay(db: Path | None, webhook_id: str, message_id: str | None, since: str | None) -> None:
    """Queue messages again; the server's dispatcher sends them."""
    with open_cdp(db) as cdp:
        result = cdp.webhooks.replay(webhook_id, message_id=message_id, since=since)
    click.echo(f"{result['replayed']} message(s) queued again" + ("" if result["enabled"] else " (webhook disabled)"))


# -- export ------------------------------------------------------------------------------------------


@cli.command("export")
@db_option
@click.argument("what", type=click.Choice(["records", "profiles"]))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (CSV goes to stdout without it).",
)
def export_cmd(db: Path | None, what: str, fmt: str, output: Path | None) -> None:
    """Every record with its profile id, or every profile with its traits, for write-back to a CRM."""
    from cdp.export import export

    with open_cdp(db) as cdp:
        if what == "profiles":
            cdp.identity.refresh_traits()
        written = export(cdp.store, what, fmt, output)
    if output is not None:
        click.echo(f"wrote {written} {what} to {output}")


# -- demo --------------------------------------------------------------------------------------------


@cli.group(cls=Group)
def demo() -> None:
    """Sample data: generate believable customers, load them."""


@demo.command("generate")
@db_option
@click.option("--customers", type=click.IntRange(min=1), required=True, help="How many people.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_data"), show_default=True
)
def demo_generate(db: Path | None, customers: int, seed: int, output: Path) -> None:
    """Write CRM exports, Segment events and the ground truth to a folder."""
    from cdp.demo import generate

    with click.progressbar(length=customers, label="generating", file=sys.stderr) as bar:
        summary = generate(output, customers=customers, seed=seed, progress=bar.update)
    click.echo(f"{summary.customers} customers: {summary.records} CRM records and {summary.events} events in {output}")


@demo.command("load")
@db_option
@click.argument("directory", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--if-empty", is_flag=True, help="Do nothing when the store already holds data.")
@click.option("--no-shift", is_flag=True, help="Keep event times as generated instead of moving them to now.")
def demo_load(db: Path | None, directory: Path | None, if_empty: bool, no_shift: bool) -> None:
    """Load a generated folder (default: the committed sample_data/demo)."""
    from cdp import sample

    with open_cdp(db) as cdp:
        if if_empty and not cdp.is_empty():
            click.echo("store already holds data; sample data not loaded")
            return
        summary = sample.load(cdp, directory, shift_to_now=not no_shift)
        resolution = cdp.identity.run(progress=lambda m: click.echo(m, err=True))
    for source, result in summary.records.items():
        click.echo(f"{source}: {result['inserted']} records inserted, {result['rejected']} rejected")
    click.echo(
        f"events: {summary.events_stored} stored, {summary.events_duplicates} duplicates, "
        f"{summary.events_rejected} rejected"
    )
    click.echo(f"{resolution['profiles']} profiles after identity resolution")


cli_backup.register(cli, db_option, settings_for)


def _register_groups() -> None:
    """Command groups kept in modules of their own (they use the helpers above)."""
    from cdp.privacy import cli as privacy_cli

    cli.add_command(privacy_cli.privacy)


_register_groups()


def main() -> None:
    """The ``cdp`` console script.

    Everything imported so far (pandas, DuckDB, Splink, FastAPI: about a million objects) lives as long
    as the process, so it is moved out of the collector's sight: a full collection during a run would
    otherwise walk all of it (four of them cost 0.3 s of a FEBRL4 resolution). When the command is done,
    its work committed and its files closed, the process ends without freeing the heap object by object
    (another 0.3-0.4 s after a resolution), unless threads are still running or a Spark JVM is attached.

    A command's own work allocates millions of objects that mostly live until it ends (a resolution of 200,000
    rows: 5,000 young collections and 23 full ones, 2.5 s of its run with Python's default thresholds); the
    collector runs less often (0.9 s there). `cdp serve` sets its own thresholds.
    """
    gc.freeze()
    gc.set_threshold(100_000, 20, 100)
    code: int | str | None = 0
    try:
        cli(prog_name="cdp")
    except SystemExit as exc:
        code = exc.code
    if threading.active_count() > 1 or "pyspark" in sys.modules:
        checkpoint_opened_stores()
        sys.exit(code)
    matching = sys.modules.get("cdp.identity.matching")
    if matching is not None:
        matching.close_scorers()
    if code is not None and not isinstance(code, int):  # as sys.exit: printed, status 1
        print(code, file=sys.stderr)
        code = 1
    checkpoint_opened_stores()  # the database file alone is the whole store once the command is done
    logging.shutdown()
    with contextlib.suppress(OSError):  # a closed pipe (cdp export ... | head) loses nothing more
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
