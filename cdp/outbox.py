"""The webhook outbox: every notification is a row written in the transaction of the change it reports.

Segments (enter/exit), the identity graph (``profile.merged``) and webhooks (pings) write through this
module; the dispatcher (``cdp.webhooks``) delivers the rows. It needs only SQLite and orjson, so the ingest
writer process can report merges without loading DuckDB or pandas.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from cdp import trait_picks
from cdp.chunks import chunked, marks
from cdp.privacy.consent import consent_of
from cdp.timeutil import format_ts, utcnow

_INSERT = (
    "INSERT INTO outbox (message_id, type, segment_key, profile_id, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
MAX_IDENTIFIERS = 50  # a notification carries at most this many of the profile's identifiers


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def new_message_ids(n: int) -> list[str]:
    """``n`` ids like ``new_message_id``'s, from one call to the system's random source."""
    raw = secrets.token_bytes(12 * n).hex()
    return ["msg_" + raw[i : i + 24] for i in range(0, 24 * n, 24)]


def identifiers_of(conn: sqlite3.Connection, profile_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """Each profile's identifiers, ordered by type and value."""
    ids = list(profile_ids)
    out: dict[str, list[dict[str, str]]] = {pid: [] for pid in ids}
    for part in chunked(ids):
        for pid, kind, value in conn.execute(
            f"SELECT profile_id, type, value FROM identifiers WHERE profile_id IN ({marks(part)}) ORDER BY type, value",
            part,
        ):
            out[pid].append({"type": kind, "value": value})
    return out


def write_segment_changes(
    conn: sqlite3.Connection,
    segment: Mapping[str, Any],
    run_id: int,
    entering: list[str],
    leaving: list[str],
    now: str,
) -> None:
    """One ``segment.entered``/``segment.exited`` row per profile that entered or left in this run."""
    if not entering and not leaving:
        return
    idents = identifiers_of(conn, [*entering, *leaving])
    consents = consent_of(conn, [*entering, *leaving])
    # The traits subscriptions to this segment asked for (each endpoint receives only its own; cdp.trait_picks).
    wanted = trait_picks.wanted_for_segment(conn, segment["key"])
    picked = trait_picks.pick(conn, [*entering, *leaving], wanted) if wanted else {}
    rows = []
    for change, pids in (("segment.entered", entering), ("segment.exited", leaving)):
        for pid in pids:
            profile: dict[str, Any] = {
                "id": pid,
                "identifiers": idents.get(pid, [])[:MAX_IDENTIFIERS],
                "consent": consents.get(pid, {}),
            }
            if wanted:
                profile.update(picked.get(pid, {"traits": dict.fromkeys(wanted)}))
            data = {
                "segment": {"key": segment["key"], "name": segment["name"]},
                "profile": profile,
                "run_id": run_id,
                "entered_at" if change == "segment.entered" else "exited_at": now,
            }
            rows.append((change, segment["key"], pid, orjson.dumps(data).decode(), now))
    conn.executemany(
        _INSERT, [(message_id, *row) for message_id, row in zip(new_message_ids(len(rows)), rows, strict=True)]
    )


# The name segments' code used before this module existed.
write_outbox = write_segment_changes


def write_merges(conn: sqlite3.Connection, merges: Sequence[tuple[str, str]]) -> None:
    """One ``profile.merged`` row per (survivor, gone) merge."""
    if not merges:
        return
    now = format_ts(utcnow())
    conn.executemany(
        _INSERT,
        [
            (message_id, "profile.merged", None, survivor, orjson.dumps(_merged(survivor, gone, now)).decode(), now)
            for message_id, (survivor, gone) in zip(new_message_ids(len(merges)), merges, strict=True)
        ],
    )


def write_deleted(conn: sqlite3.Connection, profile_id: str, merged_ids: Sequence[str], request_id: str) -> str:
    """A ``profile.deleted`` row: destinations delete the profile too. It names the profile ids only (never the
    identifiers: they would put the erased values back into the store)."""
    now = format_ts(utcnow())
    data = {"profile": {"id": profile_id}, "merged_profile_ids": list(merged_ids), "request_id": request_id,
            "deleted_at": now}  # fmt: skip
    message_id = new_message_id()
    conn.execute(_INSERT, (message_id, "profile.deleted", None, profile_id, orjson.dumps(data).decode(), now))
    return message_id


def _merged(survivor: str, gone: str, now: str) -> dict[str, Any]:
    return {"profile": {"id": survivor}, "merged_profile_id": gone, "merged_at": now}


def write_splits(conn: sqlite3.Connection, splits: Sequence[tuple[str, str, list[str]]]) -> None:
    """One ``profile.split`` row per (profile split, new profile, identifier keys moved) split."""
    if not splits:
        return
    now = format_ts(utcnow())
    conn.executemany(
        _INSERT,
        [
            (
                message_id,
                "profile.split",
                None,
                source,
                orjson.dumps(
                    {
                        "profile": {"id": source},
                        "new_profile_id": target,
                        "moved": moved[:MAX_IDENTIFIERS],
                        "split_at": now,
                    }
                ).decode(),
                now,
            )
            for message_id, (source, target, moved) in zip(new_message_ids(len(splits)), splits, strict=True)
        ],
    )
