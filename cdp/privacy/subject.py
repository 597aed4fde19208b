"""Who a privacy request is about: the identifiers as given (validated, normalised), and the profiles and rows
they lead to."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from cdp import normalize, record_ids
from cdp.chunks import chunked, marks
from cdp.errors import InvalidInput

IDENTIFIER_TYPES = ("user_id", "email", "phone", "anonymous_id", "record")
MAX_IDENTIFIERS = 100
RECORD_FIELDS = ("email", "phone", "first_name", "last_name", "birthday", "address_street", "address_city",
                 "address_postal_code", "company", "title")  # fmt: skip


def parse_identifiers(raw: object, phone_region: str) -> list[tuple[str, str]]:
    """``[{"type", "value"}]`` checked and normalised (emails lower-cased, phones to E.164, records
    ``source:external_id``); InvalidInput naming the item at fault."""
    if not isinstance(raw, list) or not raw:
        raise InvalidInput('identifiers must be a non-empty list of {"type", "value"}', {"field": "identifiers"})
    if len(raw) > MAX_IDENTIFIERS:
        raise InvalidInput(f"at most {MAX_IDENTIFIERS} identifiers a request", {"field": "identifiers"})
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        where = f"identifiers[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f'{where} must be an object {{"type", "value"}}', {"field": where})
        kind, value = item.get("type"), item.get("value")
        if kind not in IDENTIFIER_TYPES:
            raise InvalidInput(
                f"{where}.type is {kind!r}; it must be one of {', '.join(IDENTIFIER_TYPES)}",
                {"field": f"{where}.type", "allowed": list(IDENTIFIER_TYPES)},
            )
        if kind == "record" and isinstance(value, Mapping):
            source, external_id = value.get("source"), value.get("external_id")
            if not (isinstance(source, str) and source and isinstance(external_id, str) and external_id):
                raise InvalidInput(
                    f"{where}.value must name a record's source and external_id (non-empty strings)",
                    {"field": f"{where}.value"},
                )
            value = record_ids.value(source, external_id)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{where}.value must be a non-empty string", {"field": f"{where}.value"})
        value = value.strip()
        if kind == "email":
            value = normalize.email(value) or value.lower()
        elif kind == "phone":
            value = normalize.phone(value, phone_region) or value
        elif kind == "record":
            stored = record_ids.canonical(value)
            if stored is None:
                raise InvalidInput(
                    f'{where}.value must be \'source:external_id\' (or {{"source", "external_id"}}) for a record;'
                    " a source holding ':' or '%' is written with them escaped (%3A, %25)",
                    {"field": f"{where}.value"},
                )
            value = stored
        out.append((kind, value))
    return list(dict.fromkeys(out))


def live_id(conn: sqlite3.Connection, profile_id: str) -> str | None:
    """The profile's survivor (following merges), or None if there is no such profile."""
    seen: set[str] = set()
    current = profile_id
    while current not in seen:
        seen.add(current)
        row = conn.execute("SELECT merged_into FROM profiles WHERE id = ?", (current,)).fetchone()
        if row is None:
            return None
        if not row[0]:
            return current
        current = row[0]
    return current


def closure(conn: sqlite3.Connection, live: Sequence[str]) -> dict[str, str]:
    """Each live profile and every profile merged into it (at any depth), mapped to its live profile."""
    owner: dict[str, str] = {}
    for root in live:
        owner[root] = root
        frontier = [root]
        while frontier:
            nxt: list[str] = []
            for part in chunked(frontier):
                for (pid,) in conn.execute(f"SELECT id FROM profiles WHERE merged_into IN ({marks(part)})", part):
                    if pid not in owner:
                        owner[pid] = root
                        nxt.append(pid)
            frontier = nxt
    return owner


def refresh(conn: sqlite3.Connection, work: dict[str, Any]) -> dict[str, Any]:
    """The work again under the final transaction's lock: what arrived for the person since it was found (a new
    device linked, a profile merged in) is erased with the rest."""
    owner = {**work["owner"], **closure(conn, work["live"])}
    profiles = list(owner)
    known = {i[0] for i in work["identifiers"]}
    identifiers = list(work["identifiers"])
    for part in chunked(profiles):
        for row in conn.execute(f"SELECT id, type, value FROM identifiers WHERE profile_id IN ({marks(part)})", part):
            if row[0] not in known:
                identifiers.append(list(row))
    return {**work, "owner": owner, "profiles": profiles, "identifiers": identifiers}


def find(
    conn: sqlite3.Connection, identifiers: Sequence[tuple[str, str]], profile_id: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The work of a request: the live profiles the subject leads to, every profile merged into them, every
    identifier ``[id, type, value]`` and CRM record ``[source, external_id]`` they hold, and what was found."""
    starts: list[str] = []
    matched = 0
    for kind, value in identifiers:
        row = conn.execute("SELECT profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value)).fetchone()
        if row is not None:
            matched += 1
            starts.append(row[0])
    if profile_id is not None:
        starts.append(profile_id)
    live = list(dict.fromkeys(p for p in (live_id(conn, s) for s in starts) if p is not None))
    owner = closure(conn, live)
    profiles = list(owner)
    idents: list[list[Any]] = []
    for part in chunked(profiles):
        idents += [
            list(r)
            for r in conn.execute(
                f"SELECT id, type, value FROM identifiers WHERE profile_id IN ({marks(part)}) ORDER BY id", part
            )
        ]
    records: set[tuple[str, str]] = set()
    for part in chunked(profiles):
        records.update(
            conn.execute(f"SELECT source, external_id FROM source_records WHERE profile_id IN ({marks(part)})", part)
        )
    for _, kind, value in idents:
        record = record_ids.parse(value) if kind == "record" else None
        if record is not None:
            records.add(record)
    # The records' field values: stored identity models keep term frequencies of some of them.
    fields: dict[str, set[str]] = {}
    for part in chunked(profiles):
        cursor = conn.execute(f"SELECT * FROM source_records WHERE profile_id IN ({marks(part)})", part)
        columns = [d[0] for d in cursor.description or ()]
        for row in cursor:
            for column, value in zip(columns, row, strict=True):
                if column in RECORD_FIELDS and isinstance(value, str) and value:
                    fields.setdefault(column, set()).add(value)
    given = set(identifiers)
    others = [i for i in idents if (i[1], i[2]) not in given]
    found: dict[str, Any] = {
        "identifiers_matched": matched,
        "profiles": len(live),
        "merged_profiles": len(profiles) - len(live),
        "other_identifiers": len(others),
    }
    if live and others:
        found["note"] = (
            f"the identifiers led to {'a profile' if len(live) == 1 else f'{len(live)} profiles'} that "
            f"{len(others)} other identifier(s) also belong to; the request applies to the whole profile"
        )
    return {
        "live": live,
        "owner": owner,
        "profiles": profiles,
        "identifiers": idents,
        "records": sorted(records),
        "fields": {column: sorted(values) for column, values in fields.items()},
    }, found
