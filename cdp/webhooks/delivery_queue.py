"""The delivery queue in SQLite: fan-out from the outbox, claims, results. Each function is (part of) a
write job, run by the store's writer thread inside one transaction.

* **Fan-out**: outbox rows above the high-water mark become one ``webhook_deliveries`` row per
  matching enabled endpoint, and the mark moves, in one transaction: a crash loses nothing and
  duplicates nothing.
* **Claim**: due, pending deliveries of an endpoint that are the oldest pending one of their profile
  for that endpoint (so one profile's notifications go out in order), leased for a while by moving
  ``next_attempt_at``: if the process dies mid-request they become due again when the lease ends.
* **Record**: an attempt row per result; success finishes the delivery, failure schedules the next
  attempt from the retry schedule (plus jitter, and not before a ``Retry-After``) or marks it failed
  after the last one; 410 disables the endpoint, as does failing without success for too long.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from cdp import trait_picks
from cdp.chunks import chunked, marks
from cdp.timeutil import format_ts, parse_ts

EVENT_TYPES = ("segment.entered", "segment.exited", "profile.merged", "profile.split", "profile.deleted")
HIGH_WATER = "outbox_high_water"
FAN_OUT_BATCH = 5000
MAX_RETRY_AFTER_SECONDS = 86400.0


@dataclass
class Claimed:
    id: int
    endpoint_id: str
    url: str
    message_id: str
    type: str
    created_at: str
    data: str
    secret: str  # encrypted
    previous_secret: str | None  # encrypted, set while it still signs


@dataclass
class Result:
    delivery_id: int
    endpoint_id: str
    at: str
    status_code: int | None = None
    latency_ms: int | None = None
    response: str | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Policy:
    schedule: Sequence[float]
    jitter: float
    disable_after_seconds: float


def _ts(now: datetime, seconds: float = 0.0) -> str:
    return format_ts(now + timedelta(seconds=seconds))


def matches(kind: str, segment_key: str | None, events: set[str], segments: set[str] | None) -> bool:
    """An endpoint takes a message of a type it subscribed to, and of one of its segments (or a child)."""
    if kind not in events:
        return False
    if segments is None or not kind.startswith("segment.") or segment_key is None:
        return True
    return segment_key in segments or any(segment_key.startswith(key + ".") for key in segments)


def high_water(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM webhook_state WHERE key = ?", (HIGH_WATER,)).fetchone()
    return int(row[0]) if row else 0


def fan_out(conn: sqlite3.Connection, now: datetime, first_delay: float, limit: int = FAN_OUT_BATCH) -> int:
    """Turn the next outbox rows into deliveries; returns how many outbox rows were consumed."""
    mark = high_water(conn)
    endpoints = [
        (eid, set(orjson.loads(events)), set(orjson.loads(segments)) if segments else None, after)
        for eid, events, segments, after in conn.execute(
            "SELECT id, events, segments, after_outbox_id FROM webhook_endpoints WHERE enabled = 1"
        )
    ]
    if not endpoints:
        top = conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
        if top is not None and top > mark:
            _set_high_water(conn, top)
        return 0
    rows = conn.execute(
        "SELECT id, message_id, type, segment_key, profile_id, created_at FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
        (mark, limit),
    ).fetchall()
    if not rows:
        return 0
    due = _ts(now, first_delay)
    queued = [
        (eid, oid, message_id, kind, segment_key, profile_id, due, created_at)
        for oid, message_id, kind, segment_key, profile_id, created_at in rows
        for eid, events, segments, after in endpoints
        if oid > after and matches(kind, segment_key, events, segments)
    ]
    conn.executemany(
        "INSERT OR IGNORE INTO webhook_deliveries (endpoint_id, outbox_id, message_id, type, segment_key, profile_id,"
        " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        queued,
    )
    _set_high_water(conn, rows[-1][0])
    return len(rows)


def _set_high_water(conn: sqlite3.Connection, value: int) -> None:
    conn.execute(
        "INSERT INTO webhook_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (HIGH_WATER, value),
    )


# Due, and no older pending delivery of the same profile to the same endpoint.
HEAD_OF_LINE = (
    "d.endpoint_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id"
    " AND p.profile_id = d.profile_id AND p.status = 'pending' AND p.id < d.id)"
)


def sendable_endpoints(conn: sqlite3.Connection, now: datetime) -> list[tuple[str, str, str, str | None, str | None]]:
    """Enabled endpoints not paused by a Retry-After: (id, url, secret, previous_secret, its expiry)."""
    return conn.execute(
        "SELECT id, url, secret, previous_secret, previous_secret_expires_at FROM webhook_endpoints"
        " WHERE enabled = 1 AND (paused_until IS NULL OR paused_until <= ?)",
        (format_ts(now),),
    ).fetchall()


def has_claimable(conn: sqlite3.Connection, endpoint_id: str, now: datetime) -> bool:
    sql = f"SELECT 1 FROM webhook_deliveries d WHERE {HEAD_OF_LINE} LIMIT 1"
    return conn.execute(sql, (endpoint_id, format_ts(now))).fetchone() is not None


def claim(
    conn: sqlite3.Connection, now: datetime, lease_seconds: float, cap: int, busy: dict[str, set[int]]
) -> list[Claimed]:
    """Lease deliveries so that each endpoint has at most ``cap`` in flight (``busy``: already in flight)."""
    claimed: list[Claimed] = []
    at = format_ts(now)
    traits = {
        eid: orjson.loads(names) if names else None
        for eid, names in conn.execute("SELECT id, traits FROM webhook_endpoints WHERE traits IS NOT NULL")
    }
    for eid, url, secret, previous, previous_expires in sendable_endpoints(conn, now):
        in_flight = busy.get(eid, set())
        wanted = cap - len(in_flight)
        if wanted <= 0:
            continue
        signing_previous = previous if previous and previous_expires and previous_expires > at else None
        rows = conn.execute(
            "SELECT d.id, d.message_id, d.type, d.created_at, coalesce(d.payload, o.payload), d.outbox_id,"
            " d.segment_key, d.profile_id"
            f" FROM webhook_deliveries d LEFT JOIN outbox o ON o.id = d.outbox_id WHERE {HEAD_OF_LINE}"
            " ORDER BY d.next_attempt_at LIMIT ?",
            (eid, at, wanted + len(in_flight)),
        ).fetchall()
        for did, message_id, kind, created_at, data, outbox_id, segment_key, profile_id in rows:
            if did in in_flight or wanted <= 0:
                continue
            if data is not None and outbox_id is not None:
                data = with_order(conn, data, outbox_id, kind, segment_key, profile_id, at)
            if data is None:  # the outbox row was removed: nothing left to send
                conn.execute(
                    "UPDATE webhook_deliveries SET status = 'failed', finished_at = ?, next_attempt_at = NULL"
                    " WHERE id = ?",
                    (at, did),
                )
                continue
            data = trait_picks.for_endpoint(data, traits.get(eid))  # only the traits this endpoint named
            claimed.append(Claimed(did, eid, url, message_id, kind, created_at, data, secret, signing_previous))
            wanted -= 1
    conn.executemany(
        "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
        [(_ts(now, lease_seconds), c.id) for c in claimed],
    )
    return claimed


def with_order(
    conn: sqlite3.Connection,
    data: str,
    sequence: int,
    kind: str,
    segment_key: str | None,
    profile_id: str | None,
    at: str,
) -> str:
    """The payload with what lets a receiver apply messages in any order (added fields only):

    - ``sequence``: the message's place in the outbox. It grows with every message, so for one profile a message
      with a lower ``sequence`` than one already applied is stale (numbers are shared by all profiles: gaps are
      normal);
    - for ``segment.*`` messages, ``current``: the profile's membership of that segment when this attempt was
      sent (``{"member": bool, "as_of": time}``), so a message replayed late still tells the truth now.
    """
    value = orjson.loads(data)
    if not isinstance(value, dict):
        return data
    value["sequence"] = sequence
    if kind.startswith("segment.") and segment_key is not None and profile_id is not None:
        member = conn.execute(
            "SELECT 1 FROM memberships WHERE segment_key = ? AND profile_id = ?", (segment_key, profile_id)
        ).fetchone()
        value["current"] = {"member": member is not None, "as_of": at}
    return orjson.dumps(value).decode()


def release(conn: sqlite3.Connection, ids: Iterable[int], now: datetime) -> None:
    """Claimed but never sent (shutdown): due again at once."""
    conn.executemany(
        "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
        [(format_ts(now), did) for did in ids],
    )


def _current(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[int, int]]:
    """(attempts, failures) of these deliveries (absent: deleted with their endpoint meanwhile)."""
    found: dict[int, tuple[int, int]] = {}
    for part in chunked(ids):
        for did, attempts, failures in conn.execute(
            f"SELECT id, attempts, failures FROM webhook_deliveries WHERE id IN ({marks(part)})", part
        ):
            found[did] = (attempts, failures)
    return found


def record(conn: sqlite3.Connection, results: Iterable[Result], now: datetime, policy: Policy) -> None:
    """Store attempts, in the order they were made; successes are written in bulk."""
    ordered = sorted(results, key=lambda r: r.at)
    current = _current(conn, [r.delivery_id for r in ordered])
    at_now = format_ts(now)
    succeeded: list[tuple[object, ...]] = []
    attempts_rows: list[tuple[object, ...]] = []
    cleared: set[str] = set()  # endpoints whose failure streak this batch already ended
    for r in ordered:
        if r.delivery_id not in current:
            continue
        attempts, failures = current[r.delivery_id]
        attempts += 1
        next_at: str | None = None
        if r.succeeded:
            outcome = "succeeded"
            succeeded.append((attempts, r.at, r.status_code, at_now, r.delivery_id))
            if r.endpoint_id not in cleared:
                conn.execute(
                    "UPDATE webhook_endpoints SET last_success_at = ?, failing_since = NULL WHERE id = ?",
                    (at_now, r.endpoint_id),
                )
                cleared.add(r.endpoint_id)
        else:
            failures += 1
            if failures >= len(policy.schedule):
                outcome = "failed"
            else:
                outcome = "retrying"
                delay = policy.schedule[failures] * (1 + random.uniform(0, policy.jitter))
                if r.retry_after is not None:
                    delay = max(delay, min(r.retry_after, MAX_RETRY_AFTER_SECONDS))
                next_at = _ts(now, delay)
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, failures = ?, next_attempt_at = ?,"
                " last_attempt_at = ?, last_status_code = ?, finished_at = ? WHERE id = ?",
                (
                    "failed" if outcome == "failed" else "pending",
                    attempts,
                    failures,
                    next_at,
                    r.at,
                    r.status_code,
                    at_now if outcome == "failed" else None,
                    r.delivery_id,
                ),
            )
            cleared.discard(r.endpoint_id)
            _endpoint_failed(conn, r, now, policy)
        current[r.delivery_id] = (attempts, failures)
        attempts_rows.append(
            (r.delivery_id, attempts, r.at, r.status_code, r.latency_ms, r.response, r.error, outcome, next_at)
        )
    conn.executemany(
        "UPDATE webhook_deliveries SET status = 'succeeded', attempts = ?, next_attempt_at = NULL,"
        " last_attempt_at = ?, last_status_code = ?, finished_at = ? WHERE id = ?",
        succeeded,
    )
    conn.executemany(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, response, error, outcome,"
        " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        attempts_rows,
    )


def _endpoint_failed(conn: sqlite3.Connection, r: Result, now: datetime, policy: Policy) -> None:
    at_now = format_ts(now)
    conn.execute(
        "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ?) WHERE id = ?", (r.at, r.endpoint_id)
    )
    if r.retry_after is not None and r.status_code in (429, 503):
        until = _ts(now, min(r.retry_after, MAX_RETRY_AFTER_SECONDS))
        conn.execute(
            "UPDATE webhook_endpoints SET paused_until = max(coalesce(paused_until, ''), ?) WHERE id = ?",
            (until, r.endpoint_id),
        )
    reason = None
    if r.status_code == 410:
        reason = "gone"
    else:
        row = conn.execute("SELECT failing_since FROM webhook_endpoints WHERE id = ?", (r.endpoint_id,)).fetchone()
        since = parse_ts(row[0]) if row else None
        if since is not None and (now - since).total_seconds() >= policy.disable_after_seconds:
            reason = "failing"
    if reason:
        conn.execute(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, disabled_at = ?, updated_at = ?"
            " WHERE id = ? AND enabled = 1",
            (reason, at_now, at_now, r.endpoint_id),
        )
