"""``CDP.webhooks``: subscriptions, their secrets, deliveries, replays, and the dispatcher."""

from __future__ import annotations

import builtins
import logging
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson

from cdp import trait_picks
from cdp.errors import InvalidInput, UnknownMessage, UnknownWebhook
from cdp.outbox import new_message_id
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import format_ts, parse_ts, utcnow
from cdp.webhooks import sending, signing, urls
from cdp.webhooks.delivery_queue import EVENT_TYPES, record
from cdp.webhooks.dispatcher import Dispatcher, lease_seconds, policy
from cdp.webhooks.vault import Vault, key_file_path

log = logging.getLogger("cdp.webhooks")

FIELDS = ("url", "events", "segments", "description", "enabled", "traits")
STATUSES = ("pending", "succeeded", "failed")
MAX_DESCRIPTION = 1000
_PUBLIC = (
    "id, url, description, events, segments, traits, enabled, disabled_reason, disabled_at, created_at, updated_at,"
    " secret_rotated_at, previous_secret_expires_at, last_success_at, failing_since, paused_until"
)


def _endpoint(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["events"] = orjson.loads(row["events"])
    out["segments"] = orjson.loads(row["segments"]) if row["segments"] else None
    out["traits"] = orjson.loads(row["traits"]) if row["traits"] else None
    out["enabled"] = bool(row["enabled"])
    return out


def _events(value: object) -> list[str]:
    if value is None:
        return list(EVENT_TYPES)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"events must be a non-empty list of {', '.join(EVENT_TYPES)}", {"field": "events"})
    for i, kind in enumerate(value):
        if kind not in EVENT_TYPES:
            raise InvalidInput(
                f"events[{i}] is {kind!r}; the event types are {', '.join(EVENT_TYPES)}",
                {"field": f"events[{i}]", "allowed": list(EVENT_TYPES)},
            )
    return list(dict.fromkeys(value))


def _segments(value: object, conn: sqlite3.Connection) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not value:
        raise InvalidInput(
            "segments must be a non-empty list of segment keys, or null for every segment", {"field": "segments"}
        )
    for i, key in enumerate(value):
        if not isinstance(key, str) or not conn.execute("SELECT 1 FROM segments WHERE key = ?", (key,)).fetchone():
            raise InvalidInput(
                f"segments[{i}]: there is no segment {key!r}; GET /v1/segments lists them",
                {"field": f"segments[{i}]", "key": key},
            )
    return list(dict.fromkeys(value))


def _description(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"description must be text of at most {MAX_DESCRIPTION} characters", {"field": "description"}
        )
    return value


def _enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput("enabled must be true or false", {"field": "enabled"})
    return value


class Webhooks:
    """Subscriptions (``create``, ``list``, ``get``, ``update``, ``delete``, ``rotate_secret``, ``test``),
    their ``deliveries`` and ``replay``; ``start``/``stop`` run the dispatcher."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.vault = Vault(settings)
        self.dispatcher = Dispatcher(store, settings, self.vault)

    # -- dispatcher ------------------------------------------------------------------------------

    def start(self) -> None:
        problem = self.key_problem()
        if problem:
            log.warning("%s", problem)
        self.dispatcher.start()

    def key_problem(self) -> str | None:
        """A loud sentence when endpoints exist but the key their secrets were sealed with is missing."""
        path = key_file_path(self.settings)
        if self.settings.secret_key is not None or path is None or path.exists():
            return None
        count = self.store.reader().execute("SELECT count(*) FROM webhook_endpoints").fetchone()[0]
        if not count:
            return None
        return (
            f"WARNING: the webhook secret-key file {path} is missing but {count} webhook endpoint(s) exist: their "
            "signing secrets cannot be decrypted and their deliveries are held. Restore the file from a backup, "
            "or rotate each endpoint's secret (cdp webhooks rotate-secret ID)."
        )

    def stop(self) -> None:
        self.dispatcher.stop()

    # -- subscriptions ---------------------------------------------------------------------------

    def _url(self, value: object) -> str:
        return urls.validate(value, allow_private=self.settings.webhooks_allow_private_urls)

    def create(
        self,
        url: str,
        events: Sequence[str] | None = None,
        segments: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool = True,
        traits: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A new endpoint; the answer holds its signing ``secret``, which is never shown again. ``traits``: trait
        names to carry in its segment.entered/exited payloads (see ``cdp.trait_picks``)."""
        checked_url = self._url(url)
        names = trait_picks.check(list(traits) if traits is not None else None)
        kinds = _events(events)
        text = _description(description)
        on = _enabled(enabled)
        webhook_id = "wh_" + secrets.token_hex(8)
        secret = signing.new_secret()
        sealed = self.vault.encrypt(secret, webhook_id)
        now = format_ts(utcnow())

        def job(conn: sqlite3.Connection) -> None:
            keys = _segments(segments, conn)
            conn.execute(
                "INSERT INTO webhook_endpoints (id, url, description, events, segments, traits, enabled,"
                " disabled_reason, disabled_at, secret, after_outbox_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT coalesce(max(id), 0) FROM outbox), ?, ?)",
                (
                    webhook_id,
                    checked_url,
                    text,
                    orjson.dumps(kinds).decode(),
                    orjson.dumps(keys).decode() if keys is not None else None,
                    orjson.dumps(names).decode() if names is not None else None,
                    int(on),
                    None if on else "manual",
                    None if on else now,
                    sealed,
                    now,
                    now,
                ),
            )

        self.store.write(job)
        return {**self.get(webhook_id), "secret": secret}

    def _require(self, webhook_id: str) -> dict[str, Any]:
        rows = self.store.query(f"SELECT {_PUBLIC} FROM webhook_endpoints WHERE id = ?", (webhook_id,))
        if not rows:
            raise UnknownWebhook(
                f"no webhook with id {webhook_id!r}; GET /v1/webhooks lists them", {"webhook_id": webhook_id}
            )
        return rows[0]

    def get(self, webhook_id: str) -> dict[str, Any]:
        out = _endpoint(self._require(webhook_id))
        conn = self.store.reader()
        for status in ("pending", "failed"):
            out[f"{status}_deliveries"] = conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ? AND status = ?", (webhook_id, status)
            ).fetchone()[0]
        out["held_reason"] = self.dispatcher.blocked.get(webhook_id)  # why pending deliveries are not sent, if so
        return out

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        after = str(position.get("id", "")) if position else ""
        rows = self.store.query(
            f"SELECT {_PUBLIC} FROM webhook_endpoints WHERE id > ? ORDER BY id LIMIT ?", (after, limit + 1)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([_endpoint(r) for r in rows], encode_cursor({"id": rows[-1]["id"]}) if more and rows else None)

    def update(self, webhook_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change any of ``url``, ``events``, ``segments`` (null: every segment), ``description``, ``enabled``,
        ``traits`` (null: identifiers only)."""
        self._require(webhook_id)
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise InvalidInput(
                f"{unknown[0]} cannot be changed; the fields are {', '.join(FIELDS)}", {"field": unknown[0]}
            )
        sets: dict[str, Any] = {}
        if "url" in changes:
            sets["url"] = self._url(changes["url"])
        if "events" in changes:
            sets["events"] = orjson.dumps(_events(changes["events"])).decode()
        if "description" in changes:
            sets["description"] = _description(changes["description"])
        if "traits" in changes:
            names = trait_picks.check(changes["traits"])
            sets["traits"] = orjson.dumps(names).decode() if names is not None else None
        now = format_ts(utcnow())
        if "enabled" in changes:
            on = _enabled(changes["enabled"])
            sets["enabled"] = int(on)
            if on:  # a fresh start: no failure streak, no pause
                sets.update(disabled_reason=None, disabled_at=None, failing_since=None, paused_until=None)

        def job(conn: sqlite3.Connection) -> None:
            if "segments" in changes:
                keys = _segments(changes["segments"], conn)
                sets["segments"] = orjson.dumps(keys).decode() if keys is not None else None
            if sets.get("enabled") == 0:
                was = conn.execute("SELECT enabled FROM webhook_endpoints WHERE id = ?", (webhook_id,)).fetchone()
                if was and was[0]:
                    sets.update(disabled_reason="manual", disabled_at=now)
            sets["updated_at"] = now
            assignments = ", ".join(f"{column} = ?" for column in sets)
            conn.execute(f"UPDATE webhook_endpoints SET {assignments} WHERE id = ?", [*sets.values(), webhook_id])

        self.store.write(job)
        self.dispatcher.wake()
        return self.get(webhook_id)

    def delete(self, webhook_id: str) -> None:
        """The endpoint and its delivery history."""
        self._require(webhook_id)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM webhook_endpoints WHERE id = ?", (webhook_id,))

        self.store.write(job)

    def rotate_secret(self, webhook_id: str, overlap_seconds: float | None = None) -> dict[str, Any]:
        """A new secret (returned once); the previous one keeps signing for ``overlap_seconds``."""
        self._require(webhook_id)
        overlap = self.settings.webhooks_secret_overlap_seconds if overlap_seconds is None else overlap_seconds
        if not isinstance(overlap, int | float) or isinstance(overlap, bool) or not 0 <= overlap <= 30 * 86400:
            raise InvalidInput("overlap_seconds must be between 0 and 2592000 (30 days)", {"field": "overlap_seconds"})
        secret = signing.new_secret()
        sealed = self.vault.encrypt(secret, webhook_id)
        now = utcnow()
        expires = format_ts(now + timedelta(seconds=overlap)) if overlap > 0 else None

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhook_endpoints SET previous_secret = CASE WHEN ? IS NULL THEN NULL ELSE secret END,"
                " previous_secret_expires_at = ?, secret = ?, secret_rotated_at = ?, updated_at = ? WHERE id = ?",
                (expires, expires, sealed, format_ts(now), format_ts(now), webhook_id),
            )

        self.store.write(job)
        self.dispatcher.unblock(webhook_id)  # deliveries held by the old secret go out at once
        return {**self.get(webhook_id), "secret": secret}

    def test(self, webhook_id: str) -> dict[str, Any]:
        """Send a ``ping`` now (from this process) and answer with the delivery and its attempt.

        A ping that fails is retried by the dispatcher like any message.
        """
        endpoint = self._require(webhook_id)
        now = utcnow()
        message_id = new_message_id()
        data = orjson.dumps({"webhook_id": webhook_id, "message": "ping from cdp"}).decode()
        lease = lease_seconds(self.settings)

        def insert(conn: sqlite3.Connection) -> tuple[int, str, str | None]:
            cursor = conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, message_id, type, payload, next_attempt_at, created_at)"
                " VALUES (?, ?, 'ping', ?, ?, ?)",
                (webhook_id, message_id, data, format_ts(now + timedelta(seconds=lease)), format_ts(now)),
            )
            row = conn.execute(
                "SELECT secret, previous_secret, previous_secret_expires_at FROM webhook_endpoints WHERE id = ?",
                (webhook_id,),
            ).fetchone()
            previous = row[1] if row[1] and row[2] and row[2] > format_ts(now) else None
            return int(cursor.lastrowid or 0), row[0], previous

        delivery_id, sealed, previous = self.store.write(insert)
        keys = [self.vault.decrypt(sealed, webhook_id)]
        if previous:
            keys.append(self.vault.decrypt(previous, webhook_id))
        out = sending.Outgoing(
            delivery_id, webhook_id, endpoint["url"], message_id, signing.body("ping", format_ts(now), data), keys
        )
        result = sending.send_now(
            out, timeout=self.settings.webhooks_timeout_seconds, allow_private=self.settings.webhooks_allow_private_urls
        )
        rules = policy(self.settings)
        self.store.write(lambda conn: record(conn, [result], utcnow(), rules))
        self.dispatcher.wake()
        return self.deliveries(webhook_id, message_id=message_id).data[0]

    # -- deliveries ------------------------------------------------------------------------------

    def deliveries(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        message_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Messages to this endpoint, newest first, each with every attempt (time, status code, latency,
        first bytes of the answer, error, next retry)."""
        self._require(webhook_id)
        limit = check_limit(limit)
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", {"field": "status"})
        position = decode_cursor(cursor)
        where: builtins.list[str] = ["endpoint_id = ?"]
        params: builtins.list[object] = [webhook_id]
        if position is not None:
            where.append("id < ?")
            params.append(int(position.get("id", 0)))
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if message_id is not None:
            where.append("message_id = ?")
            params.append(message_id)
        rows = self.store.query(
            "SELECT id, message_id, type, segment_key, profile_id, status, attempts, next_attempt_at, last_attempt_at,"
            f" last_status_code, created_at, finished_at FROM webhook_deliveries WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        attempts: dict[int, builtins.list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for attempt in self.store.query(
                "SELECT delivery_id, attempt, at, status_code, latency_ms, response, error, outcome, next_attempt_at"
                f" FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY id",
                [r["id"] for r in rows],
            ):
                attempts[attempt.pop("delivery_id")].append(attempt)
        data = []
        held = self.dispatcher.blocked.get(webhook_id)
        for row in rows:
            delivery_id = row.pop("id")
            row["attempt_count"] = row.pop("attempts")
            row["held_reason"] = held if row["status"] == "pending" else None
            row["attempts"] = attempts[delivery_id]
            data.append(row)
        return Page(data, encode_cursor({"id": delivery_id}) if more and rows else None)

    def replay(self, webhook_id: str, *, message_id: str | None = None, since: str | None = None) -> dict[str, Any]:
        """Send one message again (``message_id``, whatever its state) or every failed one since a time."""
        endpoint = self._require(webhook_id)
        if (message_id is None) == (since is None):
            raise InvalidInput("give either message_id or since (an ISO-8601 time)", {"field": "message_id"})
        now = format_ts(utcnow())
        if message_id is not None:
            replayed = self.store.write(lambda conn: self._replay_one(conn, webhook_id, message_id, now))
        else:
            start = parse_ts(since)
            if start is None:
                raise InvalidInput(f"since must be an ISO-8601 time, not {since!r}", {"field": "since"})

            def job(conn: sqlite3.Connection) -> int:
                cursor = conn.execute(
                    "UPDATE webhook_deliveries SET status = 'pending', failures = 0, next_attempt_at = ?,"
                    " finished_at = NULL WHERE endpoint_id = ? AND status = 'failed' AND created_at >= ?",
                    (now, webhook_id, format_ts(start)),
                )
                return cursor.rowcount

            replayed = self.store.write(job)
        self.dispatcher.wake()
        return {"replayed": replayed, "enabled": bool(endpoint["enabled"])}

    @staticmethod
    def _replay_one(conn: sqlite3.Connection, webhook_id: str, message_id: str, now: str) -> int:
        cursor = conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', failures = 0, next_attempt_at = ?, finished_at = NULL"
            " WHERE endpoint_id = ? AND message_id = ?",
            (now, webhook_id, message_id),
        )
        if cursor.rowcount:
            return 1
        # A message this endpoint never had (it predates the subscription, or was filtered out): send it now.
        row = conn.execute(
            "SELECT id, type, segment_key, profile_id, created_at FROM outbox WHERE message_id = ?", (message_id,)
        ).fetchone()
        if row is None:
            raise UnknownMessage(
                f"no message {message_id!r}; GET /v1/webhooks/{webhook_id}/deliveries lists this endpoint's messages",
                {"field": "message_id", "message_id": message_id},
            )
        conn.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, outbox_id, message_id, type, segment_key, profile_id,"
            " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (webhook_id, row[0], message_id, row[1], row[2], row[3], now, row[4]),
        )
        return 1
