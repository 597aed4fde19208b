"""Raw events as they arrived: filtered, newest first, cursor-paginated (like Segment's debugger)."""

from __future__ import annotations

import builtins
from typing import Any

import orjson

from cdp.errors import InvalidInput
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.store import Store
from cdp.timeutil import format_ts, parse_ts

COLUMNS = (
    "id, message_id, type, event, user_id, anonymous_id, group_id, previous_id, profile_id, timestamp,"
    " original_timestamp, sent_at, received_at, properties, traits, context, integrations, extra, source,"
    " quality_flags"
)
_JSON = ("properties", "traits", "context", "integrations", "extra", "quality_flags")


def event_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in Segment's shape (camelCase ids, JSON columns decoded)."""
    out: dict[str, Any] = {
        "messageId": row["message_id"],
        "type": row["type"],
        "userId": row["user_id"],
        "anonymousId": row["anonymous_id"],
        "profileId": row["profile_id"],
        "timestamp": row["timestamp"],
        "originalTimestamp": row["original_timestamp"],
        "sentAt": row["sent_at"],
        "receivedAt": row["received_at"],
        "source": row["source"],
    }
    if row["type"] == "track":
        out["event"] = row["event"]
    elif row["type"] in ("page", "screen"):
        out["name"] = row["event"]
    elif row["type"] == "group":
        out["groupId"] = row["group_id"]
    elif row["type"] == "alias":
        out["previousId"] = row["previous_id"]
    for column in _JSON:
        value = row[column]
        out["qualityFlags" if column == "quality_flags" else column] = orjson.loads(value) if value else None
    extra = out.pop("extra")
    if extra:
        out.update({k: v for k, v in extra.items() if k not in out})
    return out


class Events:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        profile_id: str | None = None,
        event: str | None = None,
        type: str | None = None,
        since: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        after_id: int | None = None,
    ) -> Page[dict[str, Any]]:
        """Newest first; ``after_id`` instead lists oldest-first from there (for tailing)."""
        limit = check_limit(limit)
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        # Events are indexed by profile only (cheap ingest): an id filter goes through the profiles holding it.
        if profile_id is None and (user_id is not None or anonymous_id is not None):
            kind, value = ("user_id", user_id) if user_id is not None else ("anonymous_id", anonymous_id)
            profiles = self._profiles_for(kind, str(value))
            if not profiles:
                return Page([])
            where.append(f"profile_id IN ({','.join('?' * len(profiles))})")
            params += profiles
        for column, value in (
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
            ("profile_id", profile_id),
            ("event", event),
            ("type", type),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            since_dt = parse_ts(since)
            if since_dt is None:
                raise InvalidInput(
                    f"since must be an ISO-8601 time such as 2026-01-31T00:00:00Z, not {since!r}",
                    {"field": "since"},
                )
            where.append("timestamp >= ?")
            params.append(format_ts(since_dt))
        position = decode_cursor(cursor)
        order = "DESC"
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
            order = "ASC"
        elif position is not None:
            if not isinstance(position.get("id"), int):
                raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
            where.append("id < ?")
            params.append(position["id"])
        sql = f"SELECT {COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {order} LIMIT ?"
        rows = self.store.query(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        data = [{"id": r["id"], **event_dict(r)} for r in rows]
        return Page(data, encode_cursor({"id": rows[-1]["id"]}) if more and rows else None)

    def _profiles_for(self, kind: str, value: str) -> builtins.list[str]:
        """The profiles that can hold events carrying this id: its own, and those of ids seen with it."""
        rows = (
            self.store.reader()
            .execute("SELECT id, profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value))
            .fetchone()
        )
        if rows is None:
            return []
        identifier_id, profile = rows
        found = {profile}
        if kind == "anonymous_id":
            found.update(
                r[0]
                for r in self.store.reader().execute(
                    "SELECT i.profile_id FROM identity_links l JOIN identifiers i ON i.id = l.a WHERE l.b = ?"
                    " UNION SELECT i.profile_id FROM identity_links l JOIN identifiers i ON i.id = l.b WHERE l.a = ?",
                    (identifier_id, identifier_id),
                )
            )
        return sorted(found)

    def latest_id(self) -> int:
        row = self.store.reader().execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        return int(row[0])
