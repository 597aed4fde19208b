"""Reading CRM exports: CSV, JSON (array), NDJSON and Parquet, as numbered rows.

Row numbers count data rows from 1 (a CSV's header is not a row), so an error report can be
matched with the file. A row that cannot be read becomes a :class:`BadRow`, not an exception.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from cdp.errors import InvalidInput, MissingColumns
from cdp.ingest.records import BadRow, flatten

FORMATS = ("csv", "json", "ndjson", "parquet")
_SUFFIXES = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet"}
Rows = Iterator[tuple[int, Mapping[str, Any] | BadRow]]


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", {"field": "format"})
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InvalidInput(
            f"cannot tell the format of {path.name!r} from its extension; pass --format {'|'.join(FORMATS)}"
        )
    return found


def count_rows(path: Path, fmt: str) -> int | None:
    """A quick row count for progress bars (lines for text formats; exact for Parquet)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt in ("csv", "ndjson"):
        with path.open("rb") as handle:
            lines = sum(1 for line in handle if line.strip())
        return max(lines - 1, 0) if fmt == "csv" else lines
    return None


def columns(path: Path, fmt: str, encoding: str = "utf-8-sig", sample: int = 1000) -> list[str]:
    """The file's column names: a CSV's header, a Parquet schema, the keys of a JSON file's first
    ``sample`` objects (``address.*`` and ``traits`` flattened as the import reads them)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if not path.is_file():
            raise InvalidInput(f"no such file: {path}", {"path": str(path)})
        return list(pq.ParquetFile(path).schema_arrow.names)
    if fmt == "csv":
        if not path.is_file():
            raise InvalidInput(f"no such file: {path}", {"path": str(path)})
        try:
            with path.open(newline="", encoding=encoding) as handle:
                header = next(csv.reader(handle), [])
        except UnicodeDecodeError:
            return []  # read_rows reports the encoding with its fix
        return [h for h in header]
    seen: dict[str, None] = {}
    for n, (_, row) in enumerate(read_rows(path, fmt, encoding), start=1):
        if isinstance(row, Mapping):
            seen.update(dict.fromkeys(str(k) for k in row))
            seen.update(dict.fromkeys(flatten(row)))
        if n >= sample:
            break
    return list(seen)


def check_columns(
    path: Path, fmt: str, *, id_column: str, mapping: Mapping[str, str], encoding: str = "utf-8-sig"
) -> None:
    """MissingColumns, listing the file's columns, when ``id_column`` or a ``mapping`` source is not one."""
    have = columns(path, fmt, encoding)
    if not have:
        return  # an empty or unreadable file: read_rows says why
    wanted = [(id_column, "--id-column")] + [(col, f"--map {col}={field}") for col, field in mapping.items()]
    missing = [(col, option) for col, option in wanted if col not in have]
    if missing:
        names = ", ".join(f"{col!r} ({option})" for col, option in missing)
        raise MissingColumns(
            f"{path.name} has no column {names}; its columns are: {', '.join(have)}",
            {"missing": [col for col, _ in missing], "columns": have},
        )


def read_rows(path: Path, fmt: str, encoding: str = "utf-8-sig") -> Rows:
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}", {"path": str(path)})
    reader = {"csv": _csv, "json": _json, "ndjson": _ndjson, "parquet": _parquet}[fmt]
    try:
        yield from reader(path, encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{path.name} is not {encoding} text ({exc.reason} at byte {exc.start}); "
            "re-export it as UTF-8 or pass --encoding (e.g. cp1252)"
        ) from exc


def _csv(path: Path, encoding: str) -> Rows:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(newline="", encoding=encoding) as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise InvalidInput(f"{path.name} is empty or has no header row")
        duplicates = {h for h in reader.fieldnames if reader.fieldnames.count(h) > 1}
        if duplicates:
            raise InvalidInput(f"{path.name} has repeated column names: {', '.join(sorted(duplicates))}")
        for number, row in enumerate(reader, start=1):
            if None in row:
                yield (
                    number,
                    BadRow(
                        f"row has {len(reader.fieldnames) + len(row[None])} cells, header has {len(reader.fieldnames)}"
                    ),
                )
                continue
            yield number, row


def _json(path: Path, encoding: str) -> Rows:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{path.name} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise InvalidInput(f'{path.name} must hold a JSON array of records (or {{"records": [...]}})')
    for number, item in enumerate(data, start=1):
        yield number, item if isinstance(item, dict) else BadRow(f"not an object: {type(item).__name__}")


def _ndjson(path: Path, encoding: str) -> Rows:
    with path.open(encoding=encoding) as handle:
        yield from ndjson_lines(handle)


def ndjson_lines(lines: Iterator[str] | Any) -> Rows:
    number = 0
    for line in lines:
        if not line.strip():
            continue
        number += 1
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, BadRow(f"line {number} is not valid JSON: {exc}")
            continue
        yield number, item if isinstance(item, dict) else BadRow(f"not an object: {type(item).__name__}")


def _parquet(path: Path, encoding: str) -> Rows:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for item in batch.to_pylist():
            number += 1
            yield number, item
