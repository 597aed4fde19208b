"""``CDP.profiles``: unified profiles, lookups by any identifier, timelines, identities, explanations."""

from __future__ import annotations

from typing import Any

import orjson

from cdp import normalize, record_ids
from cdp.errors import InvalidInput, UnknownProfile, UnknownSegment
from cdp.events import COLUMNS as EVENT_COLUMNS
from cdp.events import event_dict
from cdp.identity.traits import computed_rows, explain, profile_sources, unify
from cdp.ml.scores import merge_scores
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.privacy.consent import consent_of
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import format_ts, parse_ts, utcnow

LOOKUP_TYPES = ("user_id", "anonymous_id", "email", "phone")
SEARCH_TYPES = ("user_id", "anonymous_id", "email", "phone", "external_id", "record")
_LAST = "\U0010ffff"  # above every character: value >= q AND value < q || _LAST is a prefix match on an index
# Name prefixes, each a range on an expression index of migration 0011 (lower-cased; "first last" also covers a
# first-name prefix). One UNION branch per index: SQLite seeks each.
_RECORD_FULL = "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))"
_PROFILE_FULL = (
    "lower(coalesce(json_extract(traits, '$.first_name'), '') || ' '"
    " || coalesce(json_extract(traits, '$.last_name'), ''))"
)
_NAME_MATCH = " UNION ".join(
    [
        *(
            f"SELECT profile_id FROM source_records WHERE {expr} >= :nlo AND {expr} < :nhi AND profile_id IS NOT NULL"
            for expr in (_RECORD_FULL, "lower(last_name)", "lower(external_id)")
        ),
        *(
            f"SELECT id FROM profiles WHERE {expr} >= :nlo AND {expr} < :nhi"
            for expr in (
                _PROFILE_FULL,
                "lower(json_extract(traits, '$.last_name'))",
                "lower(json_extract(traits, '$.name'))",
            )
        ),
    ]
)


class Profiles:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # -- ids -------------------------------------------------------------------------------------

    def live_id(self, profile_id: str) -> str:
        """The profile's id, or its survivor's if it was merged away; UnknownProfile if never seen."""
        row = self.store.reader().execute("SELECT merged_into FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        if row is None:
            raise UnknownProfile(f"no profile with id {profile_id!r}", {"profile_id": profile_id})
        return str(row[0]) if row[0] else profile_id

    def lookup_id(
        self,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        source: str | None = None,
        external_id: str | None = None,
    ) -> str:
        given = {"user_id": user_id, "anonymous_id": anonymous_id, "email": email, "phone": phone}
        chosen = [(k, v) for k, v in given.items() if v is not None]
        if source is not None or external_id is not None:
            if not (source and external_id):
                raise InvalidInput("look up a CRM record with both source and external_id", {"field": "external_id"})
            chosen.append(("record", record_ids.value(source, external_id)))
        if len(chosen) != 1:
            raise InvalidInput(
                "give exactly one of user_id, anonymous_id, email, phone, or source with external_id",
                {"given": [k for k, _ in chosen]},
            )
        kind, value = chosen[0]
        if kind == "email":
            value = normalize.email(value) or value.strip().lower()
        elif kind == "phone":
            value = normalize.phone(value, self.settings.default_phone_region) or value
        row = (
            self.store.reader()
            .execute("SELECT profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value))
            .fetchone()
        )
        if row is None:
            raise UnknownProfile(f"no profile has {kind} {value!r}", {"type": kind, "value": value})
        return self.live_id(row[0])

    # -- reads -----------------------------------------------------------------------------------

    def get(self, profile_id: str, *, explain_traits: bool = False) -> dict[str, Any]:
        """The unified profile; with ``explain_traits``, also ``trait_sources``: each trait's value, the record
        or event it came from and the survivorship rule that chose it."""
        pid = self.live_id(profile_id)
        conn = self.store.reader()
        if explain_traits:
            sources = profile_sources(conn, pid)
            return {
                **self.get(pid),
                "trait_sources": explain(sources, self.settings.trait_priority, self.settings.trait_majority),
            }
        created, updated, scores = conn.execute(
            "SELECT created_at, updated_at, scores FROM profiles WHERE id = ?", (pid,)
        ).fetchone()
        computed = merge_scores(computed_rows(conn, utcnow(), pid).get(pid, {}), scores)
        return {
            "id": pid,
            "traits": unify(profile_sources(conn, pid), self.settings.trait_priority, self.settings.trait_majority),
            "computed": computed,
            "identifiers": [
                {"type": kind, "value": value}
                for kind, value in conn.execute(
                    "SELECT type, value FROM identifiers WHERE profile_id = ? ORDER BY type, value", (pid,)
                )
            ],
            "merged_ids": self.get_merged_ids(pid),
            "consent": consent_of(conn, [pid]).get(pid, {}),
            "created_at": created,
            "updated_at": updated,
        }

    def search(
        self,
        q: str | None = None,
        *,
        segment: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Live profiles, most recently seen first (``updated_at``: the last event or record that touched
        the profile), optionally only those in ``segment`` and those ``q`` prefix-matches.

        ``q`` matches the start of any identifier (user_id, anonymous_id, email, phone, external ids; emails
        case-insensitively, phones also as ``+<digits>``) or of a first name, last name or full name (in CRM
        records, and in unified traits once resolution has refreshed them), case-insensitively.
        """
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        conn = self.store.reader()
        where: list[str] = ["p.merged_into IS NULL"]
        params: dict[str, Any] = {"limit": limit + 1}
        if segment is not None:
            if conn.execute("SELECT 1 FROM segments WHERE key = ?", (segment,)).fetchone() is None:
                raise UnknownSegment(f"no segment with key {segment!r}", {"segment": segment})
            where.append("p.id IN (SELECT profile_id FROM memberships WHERE segment_key = :segment)")
            params["segment"] = segment
        if q is not None and q.strip():
            where.append(f"p.id IN ({self._matching(q.strip(), params)})")
        if position is not None:
            at, pid = position.get("at"), position.get("id")
            if not isinstance(at, str) or not isinstance(pid, str):
                raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
            where.append("(p.updated_at < :at OR (p.updated_at = :at AND p.id < :id))")
            params.update(at=at, id=pid)
        rows = conn.execute(
            f"SELECT p.id, p.created_at, p.updated_at FROM profiles p WHERE {' AND '.join(where)}"
            " ORDER BY p.updated_at DESC, p.id DESC LIMIT :limit",
            params,
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        identifiers: dict[str, list[dict[str, str]]] = {str(r[0]): [] for r in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for pid, kind, value in conn.execute(
                f"SELECT profile_id, type, value FROM identifiers WHERE profile_id IN ({marks}) ORDER BY type, value",
                [r[0] for r in rows],
            ):
                identifiers[pid].append({"type": kind, "value": value})
        data = [
            {
                "id": pid,
                "traits": unify(profile_sources(conn, pid), self.settings.trait_priority, self.settings.trait_majority),
                "identifiers": identifiers[pid],
                "created_at": created,
                "updated_at": updated,
            }
            for pid, created, updated in rows
        ]
        last = rows[-1] if rows else None
        return Page(data, encode_cursor({"at": last[2], "id": last[0]}) if more and last else None)

    @staticmethod
    def _matching(q: str, params: dict[str, Any]) -> str:
        """SQL for the live ids of profiles ``q`` prefix-matches (binds its values into ``params``)."""
        prefixes = {q, q.lower()}
        digits = "".join(ch for ch in q if ch.isdigit())
        if digits and len(digits) >= len(q.replace(" ", "").replace("-", "").lstrip("+")):
            prefixes.add("+" + digits)  # a phone typed with spaces or dashes, or without its +
        parts = []
        for n, prefix in enumerate(sorted(prefixes)):
            params[f"lo{n}"], params[f"hi{n}"] = prefix, prefix + _LAST
            types = ", ".join(f"'{t}'" for t in SEARCH_TYPES)
            parts.append(
                f"SELECT profile_id FROM identifiers WHERE type IN ({types}) AND value >= :lo{n} AND value < :hi{n}"
            )
        params["nlo"], params["nhi"] = q.lower(), q.lower() + _LAST
        found = " UNION ".join([*parts, _NAME_MATCH])
        return f"SELECT coalesce(f.merged_into, f.id) FROM profiles f WHERE f.id IN ({found})"

    def find(self, q: str, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        """Matches of the prefix ``q`` in the order of what matched (like a phone book): ``{"id", "matched":
        {"on", "value"}, "traits", "identifiers", "updated_at"}``, one row per (name or identifier, profile).

        The same prefixes as `search`, but each index is read in its own order and only ``limit`` rows of each:
        the cost does not grow with the number of matches, so a broad prefix on millions of profiles answers
        as fast as a narrow one (`search` orders every match by recency first).
        """
        limit = check_limit(limit)
        q = q.strip()
        if not q:
            raise InvalidInput("give the start of a name or identifier to find", {"field": "q"})
        position = decode_cursor(cursor) or {}
        after = (str(position.get("k", "")), str(position.get("p", "")))
        conn = self.store.reader()
        found: list[tuple[str, str, str, str]] = []  # (key, profile id, matched on, shown value)

        def read(sql: str, lo: str, on: str) -> None:
            start = max(lo, after[0])
            rows = conn.execute(sql, {"lo": start, "hi": lo + _LAST, "ak": after[0], "ap": after[1], "n": limit + 1})
            found.extend((str(k), str(pid), on, str(k)) for k, pid in rows)

        prefixes = {q, q.lower()}
        digits = "".join(ch for ch in q if ch.isdigit())
        if digits and len(digits) >= len(q.replace(" ", "").replace("-", "").lstrip("+")):
            prefixes.add("+" + digits)
        for kind in SEARCH_TYPES:
            for prefix in sorted(prefixes):
                read(
                    f"SELECT value, profile_id FROM identifiers WHERE type = '{kind}' AND value >= :lo AND value < :hi"
                    " AND (value, profile_id) > (:ak, :ap) ORDER BY value, profile_id LIMIT :n",
                    prefix,
                    kind,
                )
        for expr, on in (
            (_RECORD_FULL, "name"),
            ("lower(last_name)", "last_name"),
            ("lower(external_id)", "external_id"),
        ):
            read(
                f"SELECT {expr}, profile_id FROM source_records WHERE {expr} >= :lo AND {expr} < :hi"
                f" AND ({expr}, profile_id) > (:ak, :ap) AND profile_id IS NOT NULL"
                f" ORDER BY {expr}, profile_id LIMIT :n",
                q.lower(),
                on,
            )
        for expr, on in (
            (_PROFILE_FULL, "name"),
            ("lower(json_extract(traits, '$.last_name'))", "last_name"),
            ("lower(json_extract(traits, '$.name'))", "name"),
        ):
            read(
                f"SELECT {expr}, id FROM profiles WHERE {expr} >= :lo AND {expr} < :hi AND ({expr}, id) > (:ak, :ap)"
                f" ORDER BY {expr}, id LIMIT :n",
                q.lower(),
                on,
            )
        found.sort()
        rows: list[tuple[str, str, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for row in found:
            if (row[0], row[1]) not in seen:
                seen.add((row[0], row[1]))
                rows.append(row)
        more = len(rows) > limit
        rows = rows[:limit]
        marks = ",".join("?" * len(rows))
        live = dict(
            conn.execute(
                f"SELECT id, coalesce(merged_into, id) FROM profiles WHERE id IN ({marks})", [r[1] for r in rows]
            ).fetchall()
        )
        ids = sorted({live.get(r[1], r[1]) for r in rows})
        details: dict[str, dict[str, Any]] = {}
        if ids:
            marks = ",".join("?" * len(ids))
            for pid, updated in conn.execute(f"SELECT id, updated_at FROM profiles WHERE id IN ({marks})", ids):
                details[pid] = {
                    "traits": unify(profile_sources(conn, pid), self.settings.trait_priority),
                    "identifiers": [],
                    "updated_at": updated,
                }
            for pid, kind, value in conn.execute(
                f"SELECT profile_id, type, value FROM identifiers WHERE profile_id IN ({marks}) ORDER BY type, value",
                ids,
            ):
                details[pid]["identifiers"].append({"type": kind, "value": value})
        data = [
            {"id": live.get(pid, pid), "matched": {"on": on, "value": shown}, **details[live.get(pid, pid)]}
            for _key, pid, on, shown in rows
            if live.get(pid, pid) in details
        ]
        return Page(data, encode_cursor({"k": rows[-1][0], "p": rows[-1][1]}) if more and rows else None)

    def identities(self, profile_id: str) -> dict[str, Any]:
        pid = self.live_id(profile_id)
        conn = self.store.reader()
        identifiers = [
            {"type": kind, "value": value, "first_seen": first, "shared": bool(shared)}
            for kind, value, first, shared in conn.execute(
                "SELECT type, value, first_seen, shared FROM identifiers WHERE profile_id = ? ORDER BY first_seen, id",
                (pid,),
            )
        ]
        records = [
            {"source": source, "external_id": ext, "updated_at": updated}
            for source, ext, updated in conn.execute(
                "SELECT source, external_id, updated_at FROM source_records WHERE profile_id = ? ORDER BY id", (pid,)
            )
        ]
        groups = [r[0] for r in conn.execute("SELECT group_id FROM profile_groups WHERE profile_id = ?", (pid,))]
        return {"profile_id": pid, "identifiers": identifiers, "records": records, "groups": groups}

    def events(
        self,
        profile_id: str,
        *,
        event: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """The profile's timeline, newest first."""
        pid = self.live_id(profile_id)
        limit = check_limit(limit)
        where, params = ["profile_id = ?"], [pid]
        if event is not None:
            where.append("event = ?")
            params.append(event)
        for name, value, op in (("since", since, ">="), ("until", until, "<")):
            if value is not None:
                when = parse_ts(value)
                if when is None:
                    raise InvalidInput(f"{name} must be an ISO-8601 time, not {value!r}", {"field": name})
                where.append(f"timestamp {op} ?")
                params.append(format_ts(when))
        position = decode_cursor(cursor)
        if position is not None:
            if not isinstance(position.get("ts"), str) or not isinstance(position.get("id"), int):
                raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
            where.append("(timestamp < ? OR (timestamp = ? AND id < ?))")
            params += [position["ts"], position["ts"], position["id"]]
        rows = self.store.query(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY timestamp DESC, id DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        data = [{"id": r["id"], **event_dict(r)} for r in rows]
        nxt = encode_cursor({"ts": rows[-1]["timestamp"], "id": rows[-1]["id"]}) if more and rows else None
        return Page(data, nxt)

    def merges(self, profile_id: str) -> list[dict[str, Any]]:
        """Every merge and split this profile took part in, oldest first."""
        pid = self.live_id(profile_id)
        ids = [pid, *self.get_merged_ids(pid)]
        marks = ",".join("?" * len(ids))
        rows = self.store.query(
            f"SELECT id, kind, profile_id, other_id, reason, details, created_at FROM merges"
            f" WHERE profile_id IN ({marks}) OR other_id IN ({marks}) ORDER BY id",
            [*ids, *ids],
        )
        return [
            {
                "id": r["id"],
                "kind": r["kind"],
                "survivor_id" if r["kind"] == "merge" else "profile_id": r["profile_id"],
                "merged_id" if r["kind"] == "merge" else "new_profile_id": r["other_id"],
                "reason": r["reason"],
                "details": orjson.loads(r["details"]),
                "at": r["created_at"],
            }
            for r in rows
        ]

    def get_merged_ids(self, profile_id: str) -> list[str]:
        return [
            r[0] for r in self.store.reader().execute("SELECT id FROM profiles WHERE merged_into = ?", (profile_id,))
        ]

    def explain(self, profile_id: str) -> dict[str, Any]:
        """The edges holding the profile together: shared identifiers and Splink matches."""
        pid = self.live_id(profile_id)
        conn = self.store.reader()
        links = [
            {
                "kind": "identifier",
                "from": {"type": ta, "value": va},
                "to": {"type": tb, "value": vb},
                "rule": kind,
                "origin": origin,
                "at": at,
            }
            for ta, va, tb, vb, kind, origin, at in conn.execute(
                "SELECT ia.type, ia.value, ib.type, ib.value, l.kind, l.origin, l.created_at"
                " FROM identity_links l JOIN identifiers ia ON ia.id = l.a JOIN identifiers ib ON ib.id = l.b"
                " WHERE ia.profile_id = ? AND ib.profile_id = ? ORDER BY l.id",
                (pid, pid),
            )
        ]
        nodes = [
            f"{kind}:{value}"
            for kind, value in conn.execute(
                "SELECT type, value FROM identifiers WHERE profile_id = ? AND type IN ('record', 'user_id')", (pid,)
            )
        ]
        matches: list[dict[str, Any]] = []
        if len(nodes) > 1:
            marks = ",".join("?" * len(nodes))
            for left, right, weight, prob, version, contributions in conn.execute(
                "SELECT node_l, node_r, match_weight, match_probability, model_version, contributions FROM match_edges"
                f" WHERE node_l IN ({marks}) AND node_r IN ({marks}) ORDER BY match_weight DESC",
                [*nodes, *nodes],
            ):
                matches.append(
                    {
                        "kind": "probabilistic",
                        "left": left,
                        "right": right,
                        "match_weight": weight,
                        "match_probability": prob,
                        "model_version": version,
                        "comparisons": orjson.loads(contributions),
                    }
                )
        return {"profile_id": pid, "edges": links + matches, "merges": self.merges(pid)}

    def conflicts(self, *, limit: int | None = None, cursor: str | None = None) -> Page[dict[str, Any]]:
        limit = check_limit(limit)
        position = decode_cursor(cursor)
        where, params = "", []
        if position is not None:
            if not isinstance(position.get("id"), int):
                raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
            where, params = "WHERE id < ?", [position["id"]]
        rows = self.store.query(
            f"SELECT * FROM identity_conflicts {where} ORDER BY id DESC LIMIT ?", [*params, limit + 1]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        data = [
            {
                "id": r["id"],
                "rule": r["rule"],
                "message": r["message"],
                "identifier": {"type": r["identifier_type"], "value": r["identifier_value"]},
                "profile_ids": orjson.loads(r["profile_ids"]),
                "origin": r["origin"],
                "at": r["created_at"],
            }
            for r in rows
        ]
        return Page(data, encode_cursor({"id": rows[-1]["id"]}) if more and rows else None)
