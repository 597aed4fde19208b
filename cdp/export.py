"""Write-back exports: every CRM record with its profile id; every profile with its traits."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.errors import InvalidInput
from cdp.ml.scores import merge_scores
from cdp.store import Store

FORMATS = ("csv", "parquet")
RECORD_COLUMNS = ["source", "external_id", "profile_id"]
TRAIT_COLUMNS = ["email", "phone", "first_name", "last_name", "birthday", "address.street", "address.city",
                 "address.postal_code", "address.country", "company", "title"]  # fmt: skip
COMPUTED_COLUMNS = ["first_seen", "last_seen", "event_count", "order_count", "total_revenue", "average_order_value",
                    "last_order_at", "days_since_last_order", "persona", "persona_confidence"]  # fmt: skip


def _records(store: Store) -> Iterator[dict[str, Any]]:
    cursor = store.reader().execute(
        "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id) FROM source_records r"
        " LEFT JOIN profiles p ON p.id = r.profile_id ORDER BY r.source, r.external_id"
    )
    for source, ext, pid in cursor:
        yield {"source": source, "external_id": ext, "profile_id": pid}


def _dig(traits: dict[str, Any], dotted: str) -> Any:
    value: Any = traits
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _profiles(store: Store) -> Iterator[dict[str, Any]]:
    cursor = store.reader().execute(
        "SELECT p.id, p.created_at, p.updated_at, p.traits, p.computed, p.scores,"
        " (SELECT group_concat(m.segment_key, ';') FROM (SELECT segment_key FROM memberships"
        "  WHERE profile_id = p.id ORDER BY segment_key) AS m)"
        " FROM profiles p WHERE p.merged_into IS NULL ORDER BY p.id"
    )
    for pid, created, updated, traits_json, computed_json, scores_json, segments in cursor:
        traits = orjson.loads(traits_json)
        computed = merge_scores(orjson.loads(computed_json), scores_json)
        computed_json = orjson.dumps(computed).decode()
        row: dict[str, Any] = {"profile_id": pid, "created_at": created, "updated_at": updated}
        for column in TRAIT_COLUMNS:
            value = _dig(traits, column)
            row[column] = None if value is None else str(value)
        for column in COMPUTED_COLUMNS:
            row[column] = computed.get(column)
        row["traits"] = traits_json
        row["computed"] = computed_json
        row["segments"] = segments or ""
        yield row


def export(store: Store, what: str, fmt: str = "csv", output: Path | None = None) -> int:
    """Write records or profiles; returns how many rows were written."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if what == "records":
        rows, columns = _records(store), RECORD_COLUMNS
    elif what == "profiles":
        rows = _profiles(store)
        columns = [
            "profile_id",
            "created_at",
            "updated_at",
            *TRAIT_COLUMNS,
            *COMPUTED_COLUMNS,
            "traits",
            "computed",
            "segments",
        ]
    else:
        raise InvalidInput(f"export records or profiles, not {what!r}")
    if fmt == "parquet":
        if output is None:
            raise InvalidInput("Parquet needs --output FILE")
        table = pa.Table.from_pylist(list(rows)) if columns else pa.table({})
        if table.num_rows == 0:
            table = pa.table({c: pa.array([], pa.string()) for c in columns})
        pq.write_table(table, output)
        return int(table.num_rows)
    handle: TextIO = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        written = 0
        for row in rows:
            writer.writerow(row)
            written += 1
        return written
    finally:
        if output:
            handle.close()
