"""Manual merges and splits of profiles, audited and undoable, and kept by every later run.

A manual merge joins two live profiles as an automatic merge does (the older survives; identifiers,
records, events, groups and segment memberships follow) and records a must-link between the two
profiles' leading identifiers. A manual split moves the records and identifiers named to a new
profile (records and events follow the identifiers that anchor them) and records a cannot-link between
the two parts' leading identifiers, plus must-links that keep the moved part together. Both appear in
``merges`` with ``reason: "manual"`` (who, why, note in ``details``), send ``profile.merged`` or
``profile.split`` webhook events, and can be undone (the last manual action on a profile).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from cdp import normalize, outbox, record_ids
from cdp.errors import CDPError, InvalidInput, NotFound, UnknownProfile
from cdp.hooks import Hook
from cdp.identity import labels
from cdp.identity.graph import PRIORITY, IdentityGraph, new_profile_id
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import now_iso

MATCHABLE = ("record", "user_id")


class StewardshipRefused(CDPError):
    """A manual merge, split or undo that cannot be done as asked (the message says why)."""

    code = "stewardship_refused"
    status = 409


class NothingToUndo(NotFound):
    code = "nothing_to_undo"


class Stewardship:
    """``CDP.stewardship``: manual merge, split and undo."""

    def __init__(self, store: Store, settings: Settings, graph: IdentityGraph) -> None:
        self.store = store
        self.settings = settings
        self.graph = graph
        self.profiles_changed: Hook[[list[str]]] = Hook("stewardship.profiles_changed")  # after a manual action

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def live(conn: sqlite3.Connection, profile_id: str, field: str = "profile_id") -> str:
        if not isinstance(profile_id, str) or not profile_id:
            raise InvalidInput(f"{field} must be a profile id such as prof_...", {"field": field})
        row = conn.execute("SELECT merged_into FROM profiles WHERE id = ?", (profile_id,)).fetchone()
        if row is None:
            raise UnknownProfile(f"no profile with id {profile_id!r}", {"field": field, "profile_id": profile_id})
        return str(row[0]) if row[0] else profile_id

    @staticmethod
    def _identifiers(conn: sqlite3.Connection, profile_id: str) -> list[tuple[int, str, str]]:
        return [
            (int(i), str(t), str(v))
            for i, t, v in conn.execute(
                "SELECT id, type, value FROM identifiers WHERE profile_id = ? ORDER BY id", (profile_id,)
            )
        ]

    @staticmethod
    def _leader(rows: Sequence[tuple[int, str, str]]) -> str:
        """The identifier that stands for a set of them in labels: a matchable one first, then by priority."""
        best = min(rows, key=lambda r: (r[1] not in MATCHABLE, PRIORITY.get(r[1], 99), r[0]))
        return f"{best[1]}:{best[2]}"

    def changed(self, profile_ids: list[str]) -> None:
        """After a manual action committed: forget cached identity facts; traits and segments follow."""
        self.graph.invalidate()
        self.profiles_changed(profile_ids)

    # -- merge -----------------------------------------------------------------------------------

    def merge(
        self,
        profile_id: str,
        other: str,
        *,
        note: str | None = None,
        key_id: str | None = None,
        review_item: int | None = None,
    ) -> dict[str, Any]:
        """Merge ``other`` and ``profile_id`` (the older survives). Returns the action and the survivor."""
        if note is not None and not isinstance(note, str):
            raise InvalidInput("note must be a string", {"field": "note"})

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            a = self.live(conn, profile_id)
            b = self.live(conn, other, "other")
            if a == b:
                raise StewardshipRefused(
                    f"{profile_id} and {other} are already one profile ({a})", {"profile_id": a, "other": other}
                )
            return self.merge_in(conn, a, b, note=note, key_id=key_id, review_item=review_item)

        result = self.store.write(run)
        self.changed([result["profile_id"]])
        return result

    def merge_in(
        self, conn: sqlite3.Connection, a: str, b: str, *, note: str | None, key_id: str | None, review_item: int | None
    ) -> dict[str, Any]:
        now = now_iso()
        ids_a, ids_b = self._identifiers(conn, a), self._identifiers(conn, b)
        if not ids_a or not ids_b:
            raise StewardshipRefused("a profile without identifiers cannot be merged", {"profiles": [a, b]})
        age = {
            p: (c, r)
            for p, c, r in conn.execute("SELECT id, created_at, rowid FROM profiles WHERE id IN (?, ?)", (a, b))
        }
        survivor, gone = sorted((a, b), key=lambda p: age[p])
        gone_ids = ids_b if gone == b else ids_a
        keys_a, keys_b = [f"{t}:{v}" for _, t, v in ids_a], [f"{t}:{v}" for _, t, v in ids_b]
        # A cannot-link between the two sides would contradict the must-link: the person's newer word wins.
        removed = _cannot_links_between(conn, keys_a, keys_b)
        conn.executemany("DELETE FROM identity_labels WHERE id = ?", [(r["id"],) for r in removed])
        state = {
            "identifiers": [i for i, _, _ in gone_ids],
            "redirects": [r[0] for r in conn.execute("SELECT id FROM profiles WHERE merged_into = ?", (gone,))],
            "groups": [list(r) for r in conn.execute(
                "SELECT group_id, first_seen FROM profile_groups WHERE profile_id = ?", (gone,))],
            "survivor_groups": [r[0] for r in conn.execute(
                "SELECT group_id FROM profile_groups WHERE profile_id = ?", (survivor,))],
            "removed_labels": removed,
        }  # fmt: skip
        action_id = _action(conn, "merge", survivor, gone, state, note, key_id, now)
        details = {"action_id": action_id, "by": key_id, "note": note, "review_item": review_item}
        self.graph.merge(conn, survivor, gone, "manual", {k: v for k, v in details.items() if v is not None}, now)
        leader_a, leader_b = self._leader(ids_a), self._leader(ids_b)
        _, _, before = labels.write(
            conn, leader_a, leader_b, "match", "review" if review_item else "merge",
            key_id=key_id, note=note, action_id=action_id, now=now,
        )  # fmt: skip
        _set_state(conn, action_id, {**state, "label": [leader_a, leader_b], "label_before": before})
        return {"action_id": action_id, "kind": "merge", "profile_id": survivor, "merged_id": gone, "at": now}

    # -- split -----------------------------------------------------------------------------------

    def split(
        self,
        profile_id: str,
        records: Sequence[Any] = (),
        identifiers: Sequence[Any] = (),
        *,
        note: str | None = None,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """Move the records and identifiers named to a new profile; returns the action and the new id."""
        if note is not None and not isinstance(note, str):
            raise InvalidInput("note must be a string", {"field": "note"})
        wanted = self._wanted(records, identifiers)

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            pid = self.live(conn, profile_id)
            return self._split(conn, pid, wanted, note=note, key_id=key_id, action=None)

        result = self.store.write(run)
        self.changed([result["profile_id"], result["new_profile_id"]])
        return result

    def _wanted(self, records: Sequence[Any], identifiers: Sequence[Any]) -> list[tuple[str, str, str]]:
        """(type, value, where) of each identifier named, normalised as stored."""
        if not isinstance(records, list | tuple) or not isinstance(identifiers, list | tuple):
            raise InvalidInput("records and identifiers must be lists", {"field": "records"})
        out: list[tuple[str, str, str]] = []
        for i, record in enumerate(records):
            where = f"records[{i}]"
            if not isinstance(record, dict) or not all(
                isinstance(record.get(k), str) and record.get(k) for k in ("source", "external_id")
            ):
                raise InvalidInput(
                    f'{where} must be {{"source": ..., "external_id": ...}} with strings', {"field": where}
                )
            out.append(("record", record_ids.value(record["source"], record["external_id"]), where))
        for i, ident in enumerate(identifiers):
            where = f"identifiers[{i}]"
            if not isinstance(ident, dict) or not all(
                isinstance(ident.get(k), str) and ident.get(k) for k in ("type", "value")
            ):
                raise InvalidInput(f'{where} must be {{"type": ..., "value": ...}} with strings', {"field": where})
            kind, value = ident["type"], ident["value"]
            if kind not in PRIORITY:
                raise InvalidInput(
                    f"{where}.type must be one of {', '.join(PRIORITY)}, not {kind!r}", {"field": f"{where}.type"}
                )
            if kind == "email":
                value = normalize.email(value) or value.strip().lower()
            elif kind == "phone":
                value = normalize.phone(value, self.settings.default_phone_region) or value
            out.append((kind, value, where))
        if not out:
            raise InvalidInput("name at least one record or identifier to split off", {"field": "records"})
        return out

    def _split(
        self,
        conn: sqlite3.Connection,
        pid: str,
        wanted: list[tuple[str, str, str]],
        *,
        note: str | None,
        key_id: str | None,
        action: int | None,
    ) -> dict[str, Any]:
        now = now_iso()
        mine = self._identifiers(conn, pid)
        by_key = {(t, v): i for i, t, v in mine}
        moving: list[tuple[int, str, str]] = []
        for kind, value, where in wanted:
            found = by_key.get((kind, value))
            if found is None:
                raise InvalidInput(
                    f"{where}: {kind} {value!r} is not an identifier of profile {pid}",
                    {"field": where, "profile_id": pid},
                )
            if found not in {m[0] for m in moving}:
                moving.append((found, kind, value))
        moved_ids = {m[0] for m in moving}
        staying = [r for r in mine if r[0] not in moved_ids]
        if not staying:
            raise InvalidInput(
                "a split must leave at least one identifier in the profile; this would move all of them",
                {"profile_id": pid},
            )
        new_id = new_profile_id()
        conn.execute("INSERT INTO profiles (id, created_at, updated_at) VALUES (?, ?, ?)", (new_id, now, now))
        state: dict[str, Any] = {"identifiers": sorted(moved_ids)}
        action_id = action or _action(conn, "split", pid, new_id, state, note, key_id, now)
        move(conn, [(i, t, v) for i, t, v in moving], pid, new_id, now)
        moved_keys = sorted(f"{t}:{v}" for _, t, v in moving)
        details = {
            "action_id": action_id,
            "by": key_id,
            "note": note,
            "identifiers": moved_keys[:50],
            "moved": len(moving),
        }
        conn.execute(
            "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at)"
            " VALUES ('split', ?, ?, 'manual', ?, ?)",
            (pid, new_id, orjson.dumps({k: v for k, v in details.items() if v is not None}).decode(), now),
        )
        outbox.write_splits(conn, [(pid, new_id, moved_keys)])
        if action is None:
            # The next run keeps the parts apart (a cannot-link between their leaders) and the moved part together.
            leader_new, leader_old = self._leader(moving), self._leader(staying)
            written = [labels.write(conn, leader_new, leader_old, "no_match", "split", key_id=key_id, note=note,
                                    action_id=action_id, now=now)]  # fmt: skip
            for _, t, v in moving:
                key = f"{t}:{v}"
                if t in MATCHABLE and key != leader_new:
                    written.append(labels.write(conn, key, leader_new, "match", "split", key_id=key_id, note=note,
                                                action_id=action_id, now=now))  # fmt: skip
            state["labels"] = [[left, right, before] for left, right, before in written]
            _set_state(conn, action_id, state)
        return {"action_id": action_id, "kind": "split", "profile_id": pid, "new_profile_id": new_id,
                "moved": moved_keys, "at": now}  # fmt: skip

    # -- undo ------------------------------------------------------------------------------------

    def undo(self, profile_id: str, *, key_id: str | None = None, note: str | None = None) -> dict[str, Any]:
        """Undo the last manual merge or split this profile took part in (and that is not undone yet)."""

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            pid = self.live(conn, profile_id)
            row = conn.execute(
                "SELECT id, kind, profile_id, other_id, state FROM manual_actions WHERE undone_at IS NULL"
                " AND (profile_id = ? OR other_id = ?) ORDER BY id DESC LIMIT 1",
                (pid, pid),
            ).fetchone()
            if row is None:
                raise NothingToUndo(f"no manual merge or split of {pid} to undo", {"profile_id": pid})
            action_id, kind, first, second, text = row
            state = orjson.loads(text)
            now = now_iso()
            if kind == "merge":
                result = self._undo_merge(conn, action_id, first, second, state, now, key_id, note)
            else:
                result = self._undo_split(conn, action_id, first, second, state, now, key_id, note)
            conn.execute("UPDATE manual_actions SET undone_at = ? WHERE id = ?", (now, action_id))
            return result

        result = self.store.write(run)
        self.changed([p for p in (result.get("profile_id"), result.get("other_id")) if p])
        return result

    def _undo_merge(
        self, conn: sqlite3.Connection, action_id: int, survivor: str, gone: str, state: dict[str, Any], now: str,
        key_id: str | None, note: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        ids = [int(i) for i in state["identifiers"]]
        rows = _rows_of(conn, ids)
        if self.live(conn, gone) != survivor or any(p != survivor for _, _, _, p in rows) or len(rows) != len(ids):
            raise StewardshipRefused(
                f"the merge of {gone} into {survivor} cannot be undone: its identifiers have moved since",
                {"action_id": action_id},
            )
        conn.execute("UPDATE profiles SET merged_into = NULL, updated_at = ? WHERE id = ?", (now, gone))
        conn.executemany(
            "UPDATE profiles SET merged_into = ? WHERE id = ?", [(gone, r) for r in state.get("redirects", [])]
        )
        move(conn, [(i, t, v) for i, t, v, _ in rows], survivor, gone, now)
        conn.executemany(
            "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen) VALUES (?, ?, ?)",
            [(gone, g, f) for g, f in state.get("groups", [])],
        )
        if "survivor_groups" in state:  # the groups the survivor had only through the merge go back
            kept = set(state["survivor_groups"])
            conn.executemany(
                "DELETE FROM profile_groups WHERE profile_id = ? AND group_id = ?",
                [(survivor, g) for g, _ in state.get("groups", []) if g not in kept],
            )
        _restore_labels(conn, action_id, state)
        for label in state.get("removed_labels", []):
            conn.execute(
                "INSERT OR REPLACE INTO identity_labels (id, node_l, node_r, decision, origin, action_id, note,"
                " key_id, created_at) VALUES (:id, :node_l, :node_r, :decision, :origin, :action_id, :note,"
                " :key_id, :created_at)",
                label,
            )
        details = {"undo": action_id, "by": key_id, "note": note}
        conn.execute(
            "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at)"
            " VALUES ('split', ?, ?, 'manual', ?, ?)",
            (survivor, gone, orjson.dumps({k: v for k, v in details.items() if v is not None}).decode(), now),
        )
        outbox.write_splits(conn, [(survivor, gone, sorted(f"{t}:{v}" for _, t, v, _ in rows))])
        return {"undone": action_id, "kind": "unmerge", "profile_id": survivor, "other_id": gone, "at": now}

    def _undo_split(
        self, conn: sqlite3.Connection, action_id: int, pid: str, new_id: str, state: dict[str, Any], now: str,
        key_id: str | None, note: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        if self.live(conn, new_id) == self.live(conn, pid):
            raise StewardshipRefused(f"{new_id} is already back in {pid}", {"action_id": action_id})
        _restore_labels(conn, action_id, state)
        details = {"undo": action_id, "by": key_id, "note": note}
        survivor = self.graph.merge(
            conn, self.live(conn, pid), self.live(conn, new_id), "manual",
            {k: v for k, v in details.items() if v is not None}, now,
        )  # fmt: skip
        return {"undone": action_id, "kind": "unsplit", "profile_id": survivor, "other_id": new_id, "at": now}


def move(conn: sqlite3.Connection, rows: Sequence[tuple[int, str, str]], source: str, target: str, now: str) -> None:
    """Move identifiers (id, type, value) from one profile to another; events and records follow the
    identifiers that anchor them (a user id its events; an anonymous id its events without a user id; a
    record identifier its CRM record)."""
    conn.executemany("UPDATE identifiers SET profile_id = ? WHERE id = ?", [(target, i) for i, _, _ in rows])
    users = [(target, source, v) for _, t, v in rows if t == "user_id"]
    anons = [(target, source, v) for _, t, v in rows if t == "anonymous_id"]
    conn.executemany("UPDATE events SET profile_id = ? WHERE profile_id = ? AND user_id = ?", users)
    conn.executemany(
        "UPDATE events SET profile_id = ? WHERE profile_id = ? AND user_id IS NULL AND anonymous_id = ?", anons
    )
    records = [r for _, t, v in rows if t == "record" and (r := record_ids.parse(v)) is not None]
    conn.executemany(
        "UPDATE source_records SET profile_id = ? WHERE source = ? AND external_id = ?", [(target, *r) for r in records]
    )
    # Groups follow their group calls: a group the moved events named goes along (with its first_seen), and
    # leaves the source unless one of the source's own events still names it.
    for (group_id,) in conn.execute(
        "SELECT DISTINCT group_id FROM events WHERE profile_id = ? AND type = 'group' AND group_id IS NOT NULL",
        (target,),
    ).fetchall():
        conn.execute(
            "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen)"
            " SELECT ?, group_id, first_seen FROM profile_groups WHERE profile_id = ? AND group_id = ?",
            (target, source, group_id),
        )
        still = conn.execute(
            "SELECT 1 FROM events WHERE profile_id = ? AND type = 'group' AND group_id = ? LIMIT 1", (source, group_id)
        ).fetchone()
        if still is None:
            conn.execute("DELETE FROM profile_groups WHERE profile_id = ? AND group_id = ?", (source, group_id))
    conn.execute(
        "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen)"
        " SELECT profile_id, group_id, min(timestamp) FROM events WHERE profile_id = ? AND type = 'group'"
        " AND group_id IS NOT NULL GROUP BY group_id",
        (target,),
    )
    conn.executemany("UPDATE profiles SET updated_at = ? WHERE id = ?", [(now, source), (now, target)])


def _rows_of(conn: sqlite3.Connection, ids: list[int]) -> list[tuple[int, str, str, str]]:
    out: list[tuple[int, str, str, str]] = []
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        out += [
            (int(i), str(t), str(v), str(p))
            for i, t, v, p in conn.execute(
                f"SELECT id, type, value, profile_id FROM identifiers WHERE id IN ({','.join('?' * len(part))})", part
            )
        ]
    return out


def _action(
    conn: sqlite3.Connection, kind: str, first: str, second: str, state: dict[str, Any], note: str | None,
    key_id: str | None, now: str,
) -> int:  # fmt: skip
    cursor = conn.execute(
        "INSERT INTO manual_actions (kind, profile_id, other_id, state, note, key_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (kind, first, second, orjson.dumps(state).decode(), note, key_id, now),
    )
    return int(cursor.lastrowid or 0)


def _set_state(conn: sqlite3.Connection, action_id: int, state: dict[str, Any]) -> None:
    conn.execute("UPDATE manual_actions SET state = ? WHERE id = ?", (orjson.dumps(state).decode(), action_id))


def _restore_labels(conn: sqlite3.Connection, action_id: int, state: dict[str, Any]) -> None:
    """Labels an action wrote go; the decisions they replaced come back."""
    conn.execute("DELETE FROM identity_labels WHERE action_id = ?", (action_id,))
    written = state.get("labels") or ([[*state["label"], state.get("label_before")]] if state.get("label") else [])
    for left, right, before in written:
        if before is not None:
            labels.write(conn, left, right, before, "undo", key_id=None)


def _cannot_links_between(conn: sqlite3.Connection, left: list[str], right: list[str]) -> list[dict[str, Any]]:
    lset, rset = set(left), set(right)
    out = []
    for key in lset:
        for row in conn.execute(
            "SELECT id, node_l, node_r, decision, origin, action_id, note, key_id, created_at FROM identity_labels"
            " WHERE decision = 'no_match' AND (node_l = ? OR node_r = ?)",
            (key, key),
        ):
            other = row[2] if row[1] == key else row[1]
            if other in rset:
                out.append(dict(zip(
                    ("id", "node_l", "node_r", "decision", "origin", "action_id", "note", "key_id", "created_at"), row,
                    strict=True)))  # fmt: skip
    return out
