"""Loading the generated sample data (``cdp demo load``) and the dev keys ``make run`` prints."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from cdp.core import CDP
from cdp.errors import InvalidBatch, InvalidInput
from cdp.timeutil import format_ts, parse_ts, utcnow


def sample_dir() -> Path:
    """``cdp/sample_data/demo`` inside an installed wheel, else the repository's ``sample_data/demo``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sample_data" / "demo", here.parent / "sample_data" / "demo"):
        if (candidate / "manifest.json").is_file():
            return candidate
    return here.parent / "sample_data" / "demo"


DEFAULT_DIR = sample_dir()
_BATCH = 500


@dataclass
class LoadSummary:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    events_stored: int = 0
    events_duplicates: int = 0
    events_rejected: int = 0
    shifted_by: timedelta = timedelta(0)


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.is_file():
        raise InvalidInput(f"{directory} has no manifest.json; make one with `cdp demo generate --output {directory}`")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def _shift(msg: dict[str, Any], delta: timedelta) -> dict[str, Any]:
    parsed = parse_ts(msg.get("timestamp"))
    if parsed is not None and delta:
        msg["timestamp"] = format_ts(parsed + delta)
    return msg


def _batches(path: Path, delta: timedelta) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                batch.append(_shift(orjson.loads(line), delta))
            if len(batch) >= _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def load(
    cdp: CDP,
    directory: Path | None = None,
    *,
    shift_to_now: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> LoadSummary:
    """Import every file listed in ``manifest.json``; events are moved in time so the newest is recent."""
    directory = directory or DEFAULT_DIR
    manifest = _manifest(directory)
    summary = LoadSummary()
    generated = parse_ts(manifest.get("generated_at"))
    if shift_to_now and generated is not None:
        summary.shifted_by = utcnow() - generated
    for entry in manifest["files"]:
        path = directory / entry["path"]
        name = str(entry["path"])
        if entry["kind"] == "records":
            imported = cdp.ingest.import_file(
                path,
                source=entry["source"],
                id_column=entry["id_column"],
                mapping=entry.get("map") or {},
                fmt=entry.get("format"),
                progress=_named(progress, name),
            )
            summary.records[entry["source"]] = imported.to_dict()
        elif entry["kind"] == "events":
            info, secret = cdp.keys.create("write", name="sample-data")
            try:
                for batch in _batches(path, summary.shifted_by):
                    try:
                        result = cdp.ingest.batch({"batch": batch}, write_key=secret)
                        stored, dups, bad = result.stored, result.duplicates, 0
                    except InvalidBatch as exc:
                        stored, dups, bad = (
                            exc.details["stored"],
                            exc.details["duplicates"],
                            exc.details["rejected"],
                        )
                    summary.events_stored += stored
                    summary.events_duplicates += dups
                    summary.events_rejected += bad
                    if progress:
                        progress(name, len(batch))
            finally:
                cdp.keys.revoke(info.id)
    return summary


def _named(progress: Callable[[str, int], None] | None, name: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda n: progress(name, n)


def dev_keys(cdp: CDP, path: Path) -> dict[str, str]:
    """A write key, a read token and an admin token for local use, kept in ``path`` (mode 600) and reused
    while active.

    Only ``make run`` asks for this: production keys are made with ``cdp keys create`` and shown once.
    """
    saved: dict[str, str] = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            saved = {}
    out: dict[str, str] = {}
    for kind in ("write", "read", "admin"):
        secret = saved.get(kind)
        info = cdp.keys.lookup(secret) if secret else None
        if info is None or info.kind != kind:
            _, secret = cdp.keys.create(kind, name=f"dev-{kind}")
        assert secret is not None
        out[kind] = secret
    if out != saved:
        path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        os.chmod(path, 0o600)
    return out
