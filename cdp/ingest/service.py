"""``CDP.ingest``: the one entry point for tracking messages and CRM records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from cdp.errors import InvalidInput, InvalidRecords
from cdp.identity.graph import IdentityGraph
from cdp.ingest import files
from cdp.ingest.payload import decode_object, decompress, parse_json
from cdp.ingest.records import BadRow, ImportSummary, Records
from cdp.ingest.tracking import TYPES, IngestResult, Pending, Tracking
from cdp.jsonlimits import MESSAGE_MAX_DEPTH, depth_at_most, loads_exact
from cdp.keys import Keys
from cdp.settings import Settings
from cdp.store import Store


class Ingest:
    def __init__(self, store: Store, keys: Keys, settings: Settings, identity: IdentityGraph) -> None:
        self.settings = settings
        self.keys = keys
        self.tracking = Tracking(store, keys, settings, identity)
        self.records = Records(store, settings, identity)

    def start_writer(self) -> None:
        """Start the writer of tracking batches (the ingest writer process, if the settings ask for one)."""
        self.tracking.writer.start()

    def write_error(self) -> str | None:
        """Why the last tracking write failed (this process's store, or the ingest writer process), or None."""
        return self.tracking.store.write_error or getattr(self.tracking.writer, "last_error", None)

    def close(self) -> None:
        """Stop the writer once it has stored what it was sent."""
        self.tracking.writer.close()

    # -- tracking --------------------------------------------------------------------------------

    def message(self, kind: str, msg: dict[str, Any], *, write_key: str | None = None) -> IngestResult:
        return self.tracking.message(kind, msg, write_key=write_key)

    def batch(self, payload: dict[str, Any], *, write_key: str | None = None) -> IngestResult:
        return self.tracking.batch(payload, write_key=write_key)

    def http_body(
        self, kind: str, body: bytes, *, content_encoding: str | None = None, write_key: str | None = None
    ) -> IngestResult:
        """A raw request body for ``/v1/<kind>`` or ``/v1/batch`` (gzip and any Content-Type)."""
        return self.tracking.commit(
            self.prepare_http_body(kind, body, content_encoding=content_encoding, write_key=write_key)
        )

    async def http_body_async(
        self, kind: str, body: bytes, *, content_encoding: str | None = None, write_key: str | None = None
    ) -> IngestResult:
        """``http_body`` for the event loop: validation here (CPU only), the write awaited (the ingest
        writer process, or this process's writer thread from a worker thread)."""
        return await self.tracking.commit_async(
            self.prepare_http_body(kind, body, content_encoding=content_encoding, write_key=write_key)
        )

    def prepare_http_body(
        self, kind: str, body: bytes, *, content_encoding: str | None = None, write_key: str | None = None
    ) -> Pending:
        """``http_body``'s validation half: ``tracking.finish(pending, <what the writer stored>)`` completes it."""
        if kind == "batch":
            payload = decode_object(body, content_encoding, self.settings.max_batch_bytes)
            return self.tracking.prepare_batch(payload, write_key=write_key)
        if kind not in TYPES:
            raise InvalidInput(f"unknown message type {kind!r}")
        msg = decode_object(body, content_encoding, self.settings.max_message_bytes)
        return self.tracking.prepare_message(kind, msg, write_key=write_key)

    # -- records ---------------------------------------------------------------------------------

    def upsert_records(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        source: str | None = None,
        id_column: str | None = None,
        mapping: Mapping[str, str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        numbered = ((n, r if isinstance(r, Mapping) else BadRow("not an object")) for n, r in enumerate(records, 1))
        return self.records.upsert(numbered, source=source, id_column=id_column, mapping=mapping, progress=progress)

    def import_file(
        self,
        path: Path,
        *,
        source: str,
        id_column: str,
        mapping: Mapping[str, str] | None = None,
        fmt: str | None = None,
        encoding: str = "utf-8-sig",
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Import a file's rows; a missing ``id_column`` or ``mapping`` source is an error before any row."""
        fmt = files.detect_format(path, fmt)
        files.check_columns(path, fmt, id_column=id_column, mapping=mapping or {}, encoding=encoding)
        return self.records.upsert(
            files.read_rows(path, fmt, encoding),
            source=source,
            id_column=id_column,
            mapping=mapping,
            progress=progress,
        )

    def records_body(
        self, body: bytes, *, content_encoding: str | None = None, source: str | None = None
    ) -> ImportSummary:
        """``POST /v1/records``: a JSON array (or ``{"records": [...]}``) or NDJSON."""
        data = decompress(body, content_encoding, self.settings.max_records_bytes)
        rows: Iterable[tuple[int, Any]]
        stripped = data.lstrip()
        if stripped.startswith(b"[") or (stripped.startswith(b"{") and b"\n" not in stripped.strip()):
            parsed = parse_json(data)
            if isinstance(parsed, dict):
                parsed = parsed.get("records", [parsed])
            if not isinstance(parsed, list):
                raise InvalidInput('send a JSON array of records, {"records": [...]}, or NDJSON')
            rows = enumerate(parsed, start=1)
        else:
            rows = _ndjson_bytes(data)
        summary = self.records.upsert(
            ((n, _checked(r) if isinstance(r, Mapping | BadRow) else BadRow("not an object")) for n, r in rows),
            source=source,
        )
        if summary.rejected:
            first = summary.errors[0]
            raise InvalidRecords(
                f"{summary.rejected} of {summary.received} records were rejected and the others stored; "
                f"first: row {first['row']}: {first['message']}",
                summary.to_dict(),
            )
        return summary


def _ndjson_bytes(data: bytes) -> Iterator[tuple[int, Any]]:
    """NDJSON lines, numbered from 1 (blank lines skipped); a line that is not UTF-8 or not JSON is refused."""
    number = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, BadRow(f"line {number} is not valid UTF-8 (byte {exc.start + 1} of the line)")
            continue
        try:
            item = loads_exact(text)
        except orjson.JSONDecodeError as exc:
            yield number, BadRow(f"line {number} is not valid JSON: {exc}")
            continue
        except InvalidInput as exc:
            yield number, BadRow(f"line {number}: {exc.message}")
            continue
        yield number, item if isinstance(item, dict) else BadRow(f"not an object: {type(item).__name__}")


def _checked(row: Any) -> Any:
    """A record nested deeper than a message may be is refused (its row says so)."""
    if isinstance(row, BadRow) or depth_at_most(row, MESSAGE_MAX_DEPTH) is None:
        return row
    return BadRow(f"the record nests objects and arrays deeper than {MESSAGE_MAX_DEPTH} levels")
