"""The review queue: pairs the model doubts, kept for a person to decide.

Kept by `cdp resolve` and by the real-time linker: pairs scored between ``CDP_REVIEW_THRESHOLD`` and the
match threshold (``below_threshold``), and links that merge protection (``merge_protection``) or the
chaining guard (``chaining``) refused, when their two sides are in different profiles. Each item holds
the match probability and weight and the per-comparison partial weights (the numbers explain shows).
Items are ordered by how much a decision would teach: closest to the match threshold first (distance in
match weight, bits); refused links with no score last. A full run replaces the open items with the
pairs it finds doubtful; decided ones stay as the record of the decision (the label is the constraint).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from cdp import record_ids
from cdp.errors import CDPError, InvalidInput, NotFound
from cdp.identity import labels
from cdp.identity.stewardship import Stewardship
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.store import Store
from cdp.timeutil import now_iso

REASONS = ("below_threshold", "merge_protection", "chaining")
STATUSES = ("open", "skipped", "decided")
DECISIONS = ("match", "no_match", "skip")
UNSCORED_PRIORITY = 1000.0
"""The priority of a refused link without a match score (after every scored pair)."""
MAX_ITEMS = 5000
"""A run keeps at most this many open items (the most informative)."""
_FIELDS = (
    "email", "phone", "first_name", "last_name", "birthday", "address_street", "address_city",
    "address_postal_code", "address_country", "company", "title",
)  # fmt: skip


class UnknownReviewItem(NotFound):
    code = "unknown_review_item"


class ReviewItemDecided(CDPError):
    code = "review_item_decided"
    status = 409


@dataclass(frozen=True)
class Doubt:
    """A pair to review, as the resolution run or the real-time linker found it."""

    left: str
    right: str
    reason: str
    message: str = ""
    weight: float | None = None
    probability: float | None = None
    threshold: float | None = None
    model_version: int | None = None
    contributions: str = "{}"

    @property
    def priority(self) -> float:
        if self.weight is None or self.threshold is None:
            return UNSCORED_PRIORITY
        return round(abs(self.weight - _logit2(self.threshold)), 4)


def _logit2(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log2(p / (1 - p))


def reason_of(rule: str) -> str:
    """The review reason of a refusal rule (see `cdp.identity.cluster.Refusal`)."""
    return "chaining" if rule == "chaining" else "merge_protection"


def keep(conn: sqlite3.Connection, doubts: Iterable[Doubt], *, replace: bool) -> int:
    """Store doubtful pairs as review items (pairs already labelled or decided are left out). With
    ``replace`` (a full run), open and skipped items not found again go; one found again keeps its id and
    status (a skipped pair stays skipped). Returns how many items are open or skipped after this."""
    now = now_iso()
    found: dict[tuple[str, str], Doubt] = {}
    for doubt in doubts:
        key = labels.pair(doubt.left, doubt.right)
        if key[0] == key[1]:
            continue
        seen = found.get(key)
        if seen is None or doubt.priority < seen.priority:
            found[key] = doubt
    labelled = _labelled(conn, found)
    chosen = sorted((k for k in found if k not in labelled), key=lambda k: (found[k].priority, k))[:MAX_ITEMS]
    if replace:  # items not found again go; the others keep their id (and a skipped one stays skipped)
        keep_pairs = set(chosen)
        gone = [
            (i,)
            for i, left, right in conn.execute(
                "SELECT id, node_l, node_r FROM review_items WHERE status IN ('open', 'skipped')"
            ).fetchall()
            if (left, right) not in keep_pairs
        ]
        conn.executemany("DELETE FROM review_items WHERE id = ?", gone)
    conn.executemany(
        "INSERT INTO review_items (node_l, node_r, reason, message, match_weight, match_probability, threshold,"
        " model_version, contributions, priority, status, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (node_l, node_r) DO UPDATE SET reason = excluded.reason, message = excluded.message,"
        " match_weight = excluded.match_weight, match_probability = excluded.match_probability,"
        " threshold = excluded.threshold, model_version = excluded.model_version,"
        " contributions = excluded.contributions, priority = excluded.priority, updated_at = excluded.updated_at"
        " WHERE review_items.status != 'decided'",
        [
            (
                left, right, d.reason, d.message, d.weight, d.probability, d.threshold, d.model_version,
                d.contributions, d.priority, "open", now, now,
            )
            for (left, right), d in ((k, found[k]) for k in chosen)
        ],
    )  # fmt: skip
    return int(conn.execute("SELECT count(*) FROM review_items WHERE status != 'decided'").fetchone()[0])


def _labelled(conn: sqlite3.Connection, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    wanted = set(pairs)
    if not wanted:
        return set()
    out = {tuple(r) for r in conn.execute("SELECT node_l, node_r FROM identity_labels")}
    out |= {tuple(r) for r in conn.execute("SELECT node_l, node_r FROM review_items WHERE status = 'decided'")}
    return {p for p in wanted if p in out}


class Review:
    """``CDP.review``: list the queue, show an item side by side, decide."""

    def __init__(self, store: Store, stewardship: Stewardship) -> None:
        self.store = store
        self.stewardship = stewardship
        self._live = stewardship.live

    def page(
        self,
        *,
        status: str = "open",
        reason: str | None = None,
        source: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:
        """Items, most informative first, each with both sides' records and profiles."""
        limit = check_limit(limit)
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {status!r}", {"field": "status"})
        if reason is not None and reason not in REASONS:
            raise InvalidInput(f"reason must be one of {', '.join(REASONS)}, not {reason!r}", {"field": "reason"})
        where, params = ["status = ?"], [status]
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        if source is not None:
            prefix = record_ids.key(source, "")
            where.append("(substr(node_l, 1, ?) = ? OR substr(node_r, 1, ?) = ?)")
            params += [len(prefix), prefix, len(prefix), prefix]  # type: ignore[list-item]
        position = decode_cursor(cursor)
        if position is not None:
            if not isinstance(position.get("p"), int | float) or not isinstance(position.get("id"), int):
                raise InvalidInput("the cursor is not one this API returned", {"field": "cursor"})
            where.append("(priority > ? OR (priority = ? AND id > ?))")
            params += [position["p"], position["p"], position["id"]]
        order = "priority, id" if status != "decided" else "decided_at DESC, id DESC"
        if status == "decided" and position is not None:
            where[-1] = "id < ?"
            params = [*params[:-3], position["id"]]
        rows = self.store.query(
            f"SELECT * FROM review_items WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?", [*params, limit + 1]
        )
        conn = self.store.reader()
        data = [self._item(conn, dict(r)) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            last = dict(rows[limit - 1])
            nxt = encode_cursor({"p": last["priority"], "id": last["id"]})
        return Page(data, nxt)

    def get(self, item_id: int) -> dict[str, Any]:
        row = self.store.query("SELECT * FROM review_items WHERE id = ?", (item_id,))
        if not row:
            raise UnknownReviewItem(f"no review item with id {item_id}", {"id": item_id})
        return self._item(self.store.reader(), dict(row[0]))

    def counts(self) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.store.reader().execute("SELECT status, count(*) FROM review_items GROUP BY status")
        }

    def decide(self, item_id: int, decision: str, *, note: str | None = None, key_id: str | None) -> dict[str, Any]:
        """``match`` (a must-link; the two profiles merge now), ``no_match`` (a cannot-link; if they are one
        profile, the next full run splits them at the weakest edges) or ``skip`` (asked again later)."""
        if decision not in DECISIONS:
            raise InvalidInput(
                f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}", {"field": "decision"}
            )
        if note is not None and not isinstance(note, str):
            raise InvalidInput("note must be a string", {"field": "note"})
        found = self.store.query("SELECT node_l, node_r, status FROM review_items WHERE id = ?", (item_id,))
        if not found:
            raise UnknownReviewItem(f"no review item with id {item_id}", {"id": item_id})
        left, right = found[0]["node_l"], found[0]["node_r"]

        def store(conn: sqlite3.Connection) -> dict[str, Any] | None:
            """The label, the item's status and (a match between two profiles) the merge: one transaction."""
            status = conn.execute("SELECT status FROM review_items WHERE id = ?", (item_id,)).fetchone()[0]
            if status == "decided":
                raise ReviewItemDecided(
                    f"review item {item_id} is already decided; relabel the pair with a manual merge or split",
                    {"id": item_id},
                )
            now = now_iso()
            merged = None
            if decision == "match":
                profiles = self._profiles_of(conn, left, right)
                if profiles is not None and profiles[0] != profiles[1]:
                    merged = self.stewardship.merge_in(
                        conn, profiles[0], profiles[1], note=note, key_id=key_id, review_item=item_id
                    )
            if decision != "skip":
                labels.write(conn, left, right, decision, "review", key_id=key_id, note=note, now=now)
            conn.execute(
                "UPDATE review_items SET status = ?, decision = ?, note = ?, decided_by = ?, decided_at = ?,"
                " updated_at = ? WHERE id = ? AND status != 'decided'",
                ("skipped" if decision == "skip" else "decided", decision, note, key_id, now, now, item_id),
            )
            return merged

        merged = self.store.write(store)
        if merged is not None:
            self.stewardship.changed([merged["profile_id"]])
        item = self.get(item_id)
        if merged is not None:
            item["merge"] = merged
        return item

    def _profiles_of(self, conn: sqlite3.Connection, left: str, right: str) -> tuple[str, str] | None:
        out = []
        for key in (left, right):
            kind, _, value = key.partition(":")
            row = conn.execute(
                "SELECT profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value)
            ).fetchone()
            if row is None:
                return None
            out.append(self._live(conn, row[0]))
        return out[0], out[1]

    def _item(self, conn: sqlite3.Connection, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": row["id"],
            "reason": row["reason"],
            "message": row["message"],
            "match_probability": row["match_probability"],
            "match_weight": row["match_weight"],
            "threshold": row["threshold"],
            "model_version": row["model_version"],
            "comparisons": orjson.loads(row["contributions"] or "{}"),
            "priority": row["priority"],
            "status": row["status"],
            "decision": row["decision"],
            "note": row["note"],
            "decided_by": row["decided_by"],
            "decided_at": row["decided_at"],
            "created_at": row["created_at"],
            "left": side(conn, row["node_l"], self._live),
            "right": side(conn, row["node_r"], self._live),
        }


def side(conn: sqlite3.Connection, key: str, live: Callable[[sqlite3.Connection, str], str]) -> dict[str, Any]:
    """One side of a pair: the identifier, its record's fields (a CRM record), its profile and that
    profile's records (at most 20)."""
    kind, _, value = key.partition(":")
    out: dict[str, Any] = {"node": key, "type": kind, "source": None, "external_id": None, "fields": {}}
    if kind == "record":
        found = _record(conn, value)
        if found is not None:
            out.update(found)
    elif kind == "user_id":
        out["source"], out["external_id"] = "events", value
    row = conn.execute("SELECT profile_id FROM identifiers WHERE type = ? AND value = ?", (kind, value)).fetchone()
    if row is None:
        out["profile"] = None
        return out
    pid = live(conn, row[0])
    traits = conn.execute("SELECT traits FROM profiles WHERE id = ?", (pid,)).fetchone()
    records = [
        {"source": s, "external_id": e}
        for s, e in conn.execute(
            "SELECT source, external_id FROM source_records WHERE profile_id = ? ORDER BY id LIMIT 20", (pid,)
        )
    ]
    out["profile"] = {"id": pid, "traits": orjson.loads(traits[0]) if traits else {}, "records": records}
    return out


def _record(conn: sqlite3.Connection, value: str) -> dict[str, Any] | None:
    parts = record_ids.parse(value)
    if parts is None:
        return None
    source, external = parts
    found = conn.execute(
        f"SELECT {', '.join(_FIELDS)}, traits FROM source_records WHERE source = ? AND external_id = ?",
        (source, external),
    ).fetchone()
    if found is None:
        return None
    fields = {f: found[i] for i, f in enumerate(_FIELDS) if found[i] not in (None, "")}
    extra = orjson.loads(found[len(_FIELDS)] or "{}")
    fields.update({k: v for k, v in extra.items() if k not in fields and isinstance(v, str | int | float)})
    return {"source": source, "external_id": external, "fields": fields}
