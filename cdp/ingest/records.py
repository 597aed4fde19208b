"""CRM source records: map columns to canonical fields, normalise, upsert by (source, external_id).

Re-importing the same (source, external_id) updates the record in place; an identical re-import
changes nothing (a content hash decides). Bad rows are reported with their row number and reason
and never stop the good ones.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cdp import normalize, record_ids
from cdp.chunks import chunked, marks
from cdp.hooks import Hook
from cdp.identity.graph import IdentityGraph
from cdp.identity.observations import from_record
from cdp.privacy import consent
from cdp.privacy.suppression import drop_suppressed_records
from cdp.quality import CANONICAL_COLUMNS, Tally
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import now_iso

CANONICAL = tuple(CANONICAL_COLUMNS)

MAX_ERRORS_KEPT = 1000
_KEY = re.compile(r"[^a-z0-9]")

# Header spellings seen in CRM exports, compared lower-case without punctuation or spaces.
ALIASES = {
    **{a: "email" for a in ("email", "emailaddress", "mail", "primaryemail", "workemail")},
    **{a: "phone" for a in ("phone", "phonenumber", "mobile", "mobilephone", "telephone", "tel", "cell")},
    **{a: "first_name" for a in ("firstname", "givenname", "forename", "first")},
    **{a: "last_name" for a in ("lastname", "surname", "familyname", "last")},
    **{a: "birthday" for a in ("birthday", "birthdate", "dateofbirth", "dob")},
    **{
        a: "address.street"
        for a in ("addressstreet", "street", "streetaddress", "address1", "addressline1", "mailingstreet")
    },
    **{a: "address.city" for a in ("addresscity", "city", "town", "mailingcity")},
    **{
        a: "address.postal_code"
        for a in ("addresspostalcode", "postalcode", "zip", "zipcode", "postcode", "mailingpostalcode")
    },
    **{a: "address.country" for a in ("addresscountry", "country", "countryregion", "mailingcountry")},
    **{a: "company" for a in ("company", "companyname", "accountname", "organization", "organisation")},
    **{a: "title" for a in ("title", "jobtitle")},
}

UPSERT = (
    "INSERT INTO source_records (source, external_id, "
    + ", ".join(CANONICAL_COLUMNS.values())
    + ", traits, quality_flags, content_hash, created_at, updated_at) VALUES ("
    + ", ".join("?" * (len(CANONICAL_COLUMNS) + 7))
    + ") ON CONFLICT (source, external_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in CANONICAL_COLUMNS.values())
    + ", traits = excluded.traits, quality_flags = excluded.quality_flags,"
    " content_hash = excluded.content_hash, updated_at = excluded.updated_at"
    " WHERE content_hash != excluded.content_hash"
)

# After a chunk is upserted, in the same transaction: (connection, ids of inserted or changed rows).
SET_PROFILE = "UPDATE source_records SET profile_id = ? WHERE source = ? AND external_id = ?"


_WHY_NULL = {
    "email": "not a valid email address",
    "phone": "not a valid phone number (numbers without a country code are read in CDP_DEFAULT_PHONE_REGION)",
    "birthday": "not a date, or not a plausible birthday (CDP_DATE_ORDER sets day/month order)",
    "address.postal_code": "not a postal code",
    "address.country": "not a known country name or code",
}


class BadRow(Exception):
    """A row that could not be read at all (broken JSON line, wrong type)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class ImportSummary:
    received: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    auto_mapped: dict[str, str] = field(default_factory=dict)
    nulled: int = 0  # values kept out because normalisation turned them to null (the row itself is stored)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def null(self, row: int, field_name: str, value: Any, why: str) -> None:
        self.nulled += 1
        if len(self.warnings) < MAX_ERRORS_KEPT:
            self.warnings.append({"row": row, "field": field_name, "value": str(value)[:200], "why": why})

    def reject(self, row: int, field_name: str, code: str, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"row": row, "field": field_name, "code": code, "message": message})

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.rejected > len(self.errors),
            "nulled": self.nulled,
            "warnings": self.warnings,
            "warnings_truncated": self.nulled > len(self.warnings),
        }


def canonical_field(column: str) -> str | None:
    """The canonical field a column header stands for, if it is a known spelling."""
    if column in CANONICAL:
        return column
    return ALIASES.get(_KEY.sub("", column.lower()))


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "address" and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                flat[f"address.{sub}"] = sub_value
        elif key == "traits" and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                flat.setdefault(str(sub), sub_value)
        else:
            flat[str(key)] = value
    return flat


class Records:
    def __init__(self, store: Store, settings: Settings, identity: IdentityGraph) -> None:
        self.store = store
        self.settings = settings
        self.identity = identity
        # After records are inserted or changed, in the same transaction: the connection, the records' row ids.
        self.records_changed: Hook[[sqlite3.Connection, list[int]]] = Hook("records_changed")

    def upsert(
        self,
        rows: Iterable[tuple[int, Mapping[str, Any] | BadRow]],
        *,
        source: str | None = None,
        id_column: str | None = None,
        mapping: Mapping[str, str] | None = None,
        auto_map: bool = True,
        chunk_size: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Store numbered rows; ``source``/``id_column`` default to each row's ``source``/``external_id``."""
        mapping = dict(mapping or {})
        for target in mapping.values():
            if target.startswith("address.") and target not in CANONICAL:
                raise ValueError(f"--map target {target!r} is not a known address field")
        summary = ImportSummary()
        chunk: list[tuple[int, tuple[Any, ...], list[str]]] = []
        rejects = Tally()
        for number, raw in rows:
            summary.received += 1
            prepared = self._prepare(number, raw, source, id_column, mapping, auto_map, summary, rejects)
            if prepared is not None:
                chunk.append(prepared)
            if len(chunk) >= chunk_size:
                self._write(chunk, summary, rejects)
                chunk, rejects = [], Tally()
            if progress is not None:
                progress(1)
        if chunk or rejects:
            self._write(chunk, summary, rejects)
        return summary

    def _prepare(
        self,
        number: int,
        raw: Mapping[str, Any] | BadRow,
        source: str | None,
        id_column: str | None,
        mapping: dict[str, str],
        auto_map: bool,
        summary: ImportSummary,
        rejects: Tally,
    ) -> tuple[int, tuple[Any, ...], list[str]] | None:
        def rejected(field_name: str, code: str, message: str) -> None:
            summary.reject(number, field_name, code, message)
            rejects.add("records", src or "(unknown)", "", "received")
            rejects.add("records", src or "(unknown)", "", "rejected")
            if code == "missing_field":
                rejects.add("records", src or "(unknown)", "", f"missing:{field_name}")

        src = source
        if isinstance(raw, BadRow):
            rejected(raw.field, "unreadable_row", raw.message)
            return None
        if not isinstance(raw, Mapping):
            rejected("", "invalid_row", f"a record must be an object, not {type(raw).__name__}")
            return None
        if src is None:
            src = normalize.text(raw.get("source"))
            if src is None:
                rejected("source", "missing_field", "the record has no `source` (e.g. 'salesforce')")
                return None
        id_key = id_column or "external_id"
        external_id = normalize.text(raw.get(id_key))
        if external_id is None:
            rejected(id_key, "missing_field", f"the record has no value in its id column {id_key!r}")
            return None
        if len(external_id) > 512:
            rejected(id_key, "invalid_field", "the external id is longer than 512 characters")
            return None

        canonical: dict[str, Any] = {}
        traits: dict[str, Any] = {}
        for key, value in flatten(raw).items():
            if key == id_key or (key == "source" and source is None) or normalize.is_blank(value):
                continue
            target = mapping.get(key)
            if target is None:
                target = canonical_field(key) if auto_map else (key if key in CANONICAL else None)
                if target is not None and target != key:
                    summary.auto_mapped.setdefault(key, target)
            if target in CANONICAL:
                canonical[target] = value
            else:
                traits[target or key] = value

        flags: list[str] = []
        values: list[Any] = []
        region, order = self.settings.default_phone_region, self.settings.date_order
        for field_name in CANONICAL:
            value = canonical.get(field_name)
            if value is None:
                values.append(None)
                continue
            if field_name == "email":
                clean = normalize.email(value)
            elif field_name == "phone":
                clean = normalize.phone(value, region)
            elif field_name == "birthday":
                clean = normalize.date_iso(value, order)
                historical = None if clean else normalize.date_iso(value, order, min_year=normalize.HISTORICAL_YEAR)
                if historical:  # not a profile's birthday, but evidence for matching (genealogy, archives)
                    traits[normalize.HISTORICAL_BIRTHDAY] = historical
                    flags.append("historical:birthday")
                    values.append(None)
                    continue
            elif field_name == "address.postal_code":
                clean = normalize.postal_code(value)
            elif field_name == "address.country":
                clean = normalize.country(value)
            else:
                clean = normalize.name(value)
            if clean is None:
                flags.append(f"invalid:{field_name}")
                summary.null(
                    number, field_name, value, _WHY_NULL.get(field_name, "nothing usable was left after cleaning")
                )
            values.append(clean)
        traits_json = orjson.dumps(traits, option=orjson.OPT_SORT_KEYS, default=str).decode()
        flags_json = orjson.dumps(flags).decode() if flags else None
        digest = hashlib.sha1(orjson.dumps([values, traits_json, flags_json])).hexdigest()
        return number, (src, external_id, *values, traits_json, flags_json, digest), flags

    def _write(
        self, chunk: list[tuple[int, tuple[Any, ...], list[str]]], summary: ImportSummary, rejects: Tally
    ) -> None:
        # Within one chunk the last row for a (source, external_id) wins.
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        for _, row, _flags in chunk:
            latest[(row[0], row[1])] = row
        superseded = len(chunk) - len(latest)
        every = list(latest.values())

        def job(conn: sqlite3.Connection) -> tuple[int, int, int]:
            tally = Tally()
            rows = drop_suppressed_records(conn, every, tally)
            hashes = _existing_hashes(conn, [(r[0], r[1]) for r in rows])
            now = now_iso()
            inserted = updated = unchanged = 0
            for row in rows:
                src, key = row[0], (row[0], row[1])
                tally.add("records", src, "", "received")
                previous = hashes.get(key)
                if previous is None:
                    inserted += 1
                    tally.add("records", src, "", "stored")
                elif previous != row[-1]:
                    updated += 1
                    tally.add("records", src, "", "updated")
                else:
                    unchanged += 1
            if rows:
                conn.executemany(UPSERT, [(*row, now, now) for row in rows])
            changed = [r for r in rows if hashes.get((r[0], r[1])) != r[-1]]
            updated_rows = [r for r in changed if (r[0], r[1]) in hashes]
            if updated_rows:
                # A changed record's old pairings are no longer evidence; the next full run re-clusters.
                conn.executemany(
                    "DELETE FROM identity_links WHERE origin = ?", [(record_ids.key(r[0], r[1]),) for r in updated_rows]
                )
            if changed:
                profiles = self.identity.observe(
                    conn, [from_record(r[0], r[1], r[2], r[3], r[4], r[6], now) for r in changed]
                )
                conn.executemany(SET_PROFILE, [(p, r[0], r[1]) for r, p in zip(changed, profiles, strict=True)])
                consent.record_records(conn, changed, profiles, 2 + len(CANONICAL_COLUMNS), now)
            if changed and self.records_changed:
                self.records_changed(conn, _changed_ids(conn, [(r[0], r[1]) for r in changed]))
            tally.write(conn)
            # Rejections count against a source that holds records; a run that stored nothing for a new
            # source leaves no empty source in the quality report (its summary lists every rejected row).
            sources = {key[1] for key in rejects.sums}
            kept = {
                s for s in sources if conn.execute("SELECT 1 FROM source_records WHERE source = ?", (s,)).fetchone()
            }
            rejects.keep_sources(kept)
            rejects.write(conn)
            return inserted, updated, unchanged

        inserted, updated, unchanged = self.store.write(job)
        summary.inserted += inserted
        summary.updated += updated + superseded
        summary.unchanged += unchanged


def _existing_hashes(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    by_source: dict[str, list[str]] = {}
    for src, ext in keys:
        by_source.setdefault(src, []).append(ext)
    for src, ids in by_source.items():
        for part in chunked(ids):
            sql = (
                "SELECT external_id, content_hash FROM source_records WHERE source = ?"
                f" AND external_id IN ({marks(part)})"
            )
            for ext, digest in conn.execute(sql, [src, *part]):
                found[(src, ext)] = digest
    return found


def _changed_ids(conn: sqlite3.Connection, keys: list[tuple[str, str]]) -> list[int]:
    return [
        row[0]
        for src, ext in keys
        for row in conn.execute("SELECT id FROM source_records WHERE source = ? AND external_id = ?", (src, ext))
    ]
