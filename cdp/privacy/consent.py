"""Consent per profile and category, from Segment's consent spec.

* Messages: ``context.consent.categoryPreferences`` (``{"marketing": true, "analytics": false}``) on any message.
* CRM records: a ``consent`` object (``{"marketing": false}``).

The most recent statement wins per category (by the message's timestamp; a record's time is when it was
stored). When two profiles merge and disagree on a category, the stricter value (not granted) wins and the
conflict is recorded in ``consent_conflicts``. SQLite and orjson only: the ingest writer process runs this in
its write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from cdp import record_ids
from cdp.chunks import chunked, marks
from cdp.timeutil import format_ts, utcnow

MAX_CATEGORIES = 50
_UPSERT = (
    "INSERT INTO profile_consent (profile_id, category, granted, at, origin) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (profile_id, category) DO UPDATE SET granted = excluded.granted, at = excluded.at,"
    " origin = excluded.origin WHERE excluded.at >= profile_consent.at"
)


def preferences(value: Any) -> dict[str, bool]:
    """The usable categories of a preferences object: string keys with boolean values."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, bool] = {}
    for key, granted in value.items():
        if isinstance(key, str) and key and len(key) <= 100 and isinstance(granted, bool):
            out[key] = granted
        if len(out) >= MAX_CATEGORIES:
            break
    return out


def from_context(context_json: str | None) -> dict[str, bool]:
    """``context.consent.categoryPreferences`` of a stored message's context (JSON text)."""
    if not context_json or '"consent"' not in context_json:
        return {}
    context = orjson.loads(context_json)
    consent = context.get("consent") if isinstance(context, dict) else None
    return preferences(consent.get("categoryPreferences")) if isinstance(consent, dict) else {}


def record_events(conn: sqlite3.Connection, rows: Iterable[Any]) -> None:
    """In the ingest transaction: consent carried by stored event rows (``EventRow`` with a profile)."""
    upserts = []
    for row in rows:
        if row.profile_id is None or not row.context or '"consent"' not in row.context:
            continue
        for category, granted in from_context(row.context).items():
            upserts.append((row.profile_id, category, int(granted), row.timestamp, f"event:{row.message_id}"))
    if upserts:
        upserts.sort(key=lambda u: u[3])  # in time order: the most recent statement wins
        conn.executemany(_UPSERT, upserts)


def record_records(
    conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]], profiles: Sequence[str | None], traits_at: int, now: str
) -> None:
    """In the import transaction: the ``consent`` object of CRM records (kept in their traits JSON)."""
    upserts = []
    for row, profile_id in zip(rows, profiles, strict=True):
        traits = row[traits_at]
        if profile_id is None or '"consent"' not in traits:
            continue
        for category, granted in preferences(orjson.loads(traits).get("consent")).items():
            upserts.append((profile_id, category, int(granted), now, record_ids.key(row[0], row[1])))
    if upserts:
        conn.executemany(_UPSERT, upserts)


def follow_merges(conn: sqlite3.Connection, merges: Sequence[tuple[str, str]]) -> None:
    """In the merging transaction: the merged-away profile's consent joins the survivor's; where they
    disagree, not granted wins and the conflict is recorded."""
    now = format_ts(utcnow())
    for survivor, gone in merges:
        theirs = {c: (g, at) for c, g, at in conn.execute(_OF, (gone,))}
        if not theirs:
            continue
        mine = {c: (g, at) for c, g, at in conn.execute(_OF, (survivor,))}
        for category, (granted, at) in theirs.items():
            current = mine.get(category)
            if current is None:
                conn.execute(_UPSERT, (survivor, category, granted, at, "merge"))
            elif current[0] != granted:
                conn.execute(
                    "UPDATE profile_consent SET granted = 0, at = max(at, ?), origin = 'merge'"
                    " WHERE profile_id = ? AND category = ?",
                    (at, survivor, category),
                )
                conn.execute(
                    "INSERT INTO consent_conflicts (profile_id, other_id, category, kept, created_at)"
                    " VALUES (?, ?, ?, 0, ?)",
                    (survivor, gone, category, now),
                )
        conn.execute("DELETE FROM profile_consent WHERE profile_id = ?", (gone,))


_OF = "SELECT category, granted, at FROM profile_consent WHERE profile_id = ?"


def consent_of(conn: sqlite3.Connection, profile_ids: Iterable[str]) -> dict[str, dict[str, bool]]:
    """Each profile's consent: ``{category: granted}`` (profiles without any are left out)."""
    out: dict[str, dict[str, bool]] = {}
    for part in chunked(list(profile_ids)):
        for pid, category, granted in conn.execute(
            f"SELECT profile_id, category, granted FROM profile_consent WHERE profile_id IN ({marks(part)})", part
        ):
            out.setdefault(pid, {})[category] = bool(granted)
    return out


def details(conn: sqlite3.Connection, profile_id: str) -> dict[str, Any]:
    """A profile's consent with when and where each category was last stated, and its merge conflicts."""
    categories = {
        category: {"granted": bool(granted), "at": at, "origin": origin}
        for category, granted, at, origin in conn.execute(
            "SELECT category, granted, at, origin FROM profile_consent WHERE profile_id = ? ORDER BY category",
            (profile_id,),
        )
    }
    conflicts = [
        {"category": category, "other_profile_id": other, "kept": bool(kept), "at": at}
        for category, other, kept, at in conn.execute(
            "SELECT category, other_id, kept, created_at FROM consent_conflicts WHERE profile_id = ? ORDER BY id",
            (profile_id,),
        )
    ]
    return {"categories": categories, "conflicts": conflicts}


def required(segment: Mapping[str, Any]) -> list[str]:
    """The consent categories a segment requires: its definition's ``consent`` (a stored row or a parsed one)."""
    if "consent" in segment:
        return list(segment["consent"] or [])
    definition = segment.get("definition")
    if isinstance(definition, str) and '"consent"' in definition:
        return list(orjson.loads(definition).get("consent") or [])
    return []


def allowed(conn: sqlite3.Connection, required: Sequence[str], profile_ids: Iterable[str]) -> set[str]:
    """The profiles among ``profile_ids`` that granted every ``required`` category."""
    ids = list(profile_ids)
    if not required:
        return set(ids)
    given = consent_of(conn, ids)
    return {pid for pid in ids if all(given.get(pid, {}).get(c) is True for c in required)}
