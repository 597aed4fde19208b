"""The deterministic identity graph, linked inside the ingest transaction.

Each message or CRM record is an :class:`Observation`: the identifiers seen together on it. They
are taken in priority order (user_id first, anonymous_id last); the first one anchors the message,
and each further identifier's profile is merged into the anchor's, unless a merge-protection rule
says no (limits per identifier type, blocked values, shared identifiers, conflicting birthdays or
first names). A refusal is recorded as a conflict and never merges silently. Every pairing is kept
in ``identity_links`` in the order it was seen, so a full resolution run can replay the same
decisions with all the evidence.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cdp.hooks import Hook
from cdp.identity import labels, names
from cdp.settings import Settings

PRIORITY = {"user_id": 0, "external_id": 1, "record": 2, "email": 3, "phone": 4, "anonymous_id": 5}
TYPES = tuple(PRIORITY)
ATTRIBUTES = ("birthday", "first_name")

# What follows merges (other tables, notifications): (connection, [(survivor, merged-away profile), ...]),
# called in the merging transaction.
MergeHook = Hook[[sqlite3.Connection, Sequence[tuple[str, str]]]]


def _epoch(conn: sqlite3.Connection) -> int | None:
    """The identity graph's change count (None before migration 0006)."""
    try:
        row = conn.execute("SELECT value FROM identity_epoch WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None


def compatible_birthdays(a: str, b: str) -> bool:
    """Could these two ISO dates be one person's birthday written twice? Equal; one digit typed wrong or two
    neighbouring digits swapped (1971-06-24 / 1971-05-24, 1971-06-24 / 1971-06-42), but not in the century
    or decade (1970 / 1990 is a father and son); or day and month swapped (1971-03-04 / 1971-04-03).
    Anything further apart is another birthday."""
    if a == b:
        return True
    if len(a) == len(b) == 10 and a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]:
        return True
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if not diff or diff[0] in (1, 2):  # a wrong century or decade digit is ten years or more: another person
        return False
    if len(diff) == 1:
        return True
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _kept_apart(conn: sqlite3.Connection, a: str, b: str) -> bool:
    """Does a human cannot-link (`cdp.identity.labels`) name an identifier of each profile? Asked only when a
    shared identifier would merge two profiles, so a label holds at ingest as it does in every full run."""
    if conn.execute("SELECT 1 FROM identity_labels WHERE decision = 'no_match' LIMIT 1").fetchone() is None:
        return False
    return labels.cannot_link_between(conn, labels.profile_keys(conn, a), labels.profile_keys(conn, b))


def new_profile_id() -> str:
    return "prof_" + secrets.token_hex(10)


@dataclass
class Observation:
    identifiers: list[tuple[str, str]]
    origin: str
    when: str
    attributes: list[tuple[str, str]] = field(default_factory=list)
    alias: bool = False
    touch: bool = False  # carries traits: the profile's unified traits need a refresh

    def as_tuple(self) -> ObservationTuple:
        """The fields in order: ``Observation(*t)`` rebuilds it (tuples pickle ~10x faster)."""
        return (self.identifiers, self.origin, self.when, self.attributes, self.alias, self.touch)


SettledKey = tuple[tuple[tuple[str, str], ...], bool]
ObservationTuple = tuple[list[tuple[str, str]], str, str, list[tuple[str, str]], bool, bool]


@dataclass(frozen=True)
class Decision:
    ok: bool
    rule: str = ""
    message: str = ""


class Rules:
    """Merge protection, shared by the real-time graph and the full resolution run."""

    def __init__(self, settings: Settings) -> None:
        self.limits = dict(settings.identity_limits)
        self.blocked = {v.strip().lower() for v in settings.identity_blocked_values}
        self.guard_attributes = settings.identity_attribute_guard

    def usable(self, value: str) -> bool:
        return value.strip().lower() not in self.blocked

    def check(
        self,
        counts_a: Counter[str],
        counts_b: Counter[str],
        attrs_a: dict[str, set[str]],
        attrs_b: dict[str, set[str]],
        *,
        alias: bool = False,
        attributes: bool = True,
    ) -> Decision:
        for kind, limit in self.limits.items():
            if alias and kind == "user_id":
                continue  # an alias call is the customer's explicit instruction to join two user ids
            total = counts_a.get(kind, 0) + counts_b.get(kind, 0)
            if total > limit:
                return Decision(
                    False,
                    f"limit:{kind}",
                    f"merging would give one profile {total} {kind} identifiers (limit {limit})",
                )
        if attributes and self.guard_attributes and not alias:
            for first in attrs_a.get("birthday", ()):
                for second in attrs_b.get("birthday", ()):
                    if not compatible_birthdays(first, second):
                        return Decision(
                            False, "attribute:birthday", f"the profiles have different birthdays {first} and {second}"
                        )
            for first in attrs_a.get("first_name", ()):
                for second in attrs_b.get("first_name", ()):
                    if not names.compatible(first, second):
                        return Decision(
                            False,
                            "attribute:first_name",
                            f"the profiles have different first names {first!r} and {second!r}",
                        )
        return Decision(True)


class Cache:
    """What the identity tables said at the last commit, so returning visitors cost no SQL.

    Only the writer thread reads or changes it, and only with committed facts (see
    ``Store.after_commit``); it is dropped whenever another connection changes the database and
    after every resolution run.
    """

    MAX_ENTRIES = 2_000_000
    MAX_SETTLED = 500_000

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], tuple[int, str, int]] = {}
        self.redirect: dict[str, str] = {}
        self.pairs: set[tuple[int, int]] = set()
        # Observations that changed nothing when last seen -> their profile: a returning visitor's
        # next event (same identifiers, no new attributes) is answered by one lookup.
        self.settled: dict[SettledKey, str] = {}
        self.epoch: int | None = None  # identity_epoch when the cache was last known to be current

    def clear(self) -> None:
        self.ids.clear()
        self.redirect.clear()
        self.pairs.clear()
        self.settled.clear()

    def live(self, profile_id: str) -> str:
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def publish(self, txn: GraphTxn, epoch: int | None = None) -> None:
        """Add a committed transaction's facts (and, if it changed the graph, the change count after it)."""
        if epoch is not None:
            self.epoch = epoch
        if len(self.ids) + len(txn.ids) > self.MAX_ENTRIES or len(self.pairs) > self.MAX_ENTRIES:
            self.clear()
        self.redirect.update(txn.redirect)
        for key, row in txn.ids.items():
            self.ids[key] = (row[0], txn.live(row[1]), row[2])
        self.pairs |= txn.pairs
        if txn.settled:
            if len(self.settled) + len(txn.settled) > self.MAX_SETTLED:
                self.settled.clear()
            for settled_key, profile_id in txn.settled.items():
                self.settled[settled_key] = txn.live(profile_id)


class GraphTxn:
    """Per-transaction view of the identity tables (over the committed cache, if any)."""

    def __init__(self, conn: sqlite3.Connection, cache: Cache | None = None) -> None:
        self.conn = conn
        self.cache = cache
        self.ids: dict[tuple[str, str], list[Any]] = {}  # (type, value) -> [id, profile_id, shared]
        self.redirect: dict[str, str] = {}
        self.touched: set[str] = set()
        self.pairs: set[tuple[int, int]] = set()
        self.settled: dict[SettledKey, str] = {}
        self.writes = 0  # statements that changed the identity tables

    def identifier(self, kind: str, value: str) -> list[Any] | None:
        key = (kind, value)
        if key not in self.ids:
            cached = self.cache.ids.get(key) if self.cache is not None else None
            if cached is not None:
                assert self.cache is not None
                self.ids[key] = [cached[0], self.cache.live(cached[1]), cached[2]]
                return self.ids[key]
            row = self.conn.execute(
                "SELECT id, profile_id, shared FROM identifiers WHERE type = ? AND value = ?", key
            ).fetchone()
            if row is None:
                return None
            self.ids[key] = list(row)
        return self.ids[key]

    def linked(self, a: int, b: int) -> bool:
        return (a, b) in self.pairs or (self.cache is not None and (a, b) in self.cache.pairs)

    def live(self, profile_id: str) -> str:
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def counts(self, profile_id: str) -> Counter[str]:
        return Counter(
            dict(
                self.conn.execute(
                    "SELECT type, count(*) FROM identifiers WHERE profile_id = ? GROUP BY type", (profile_id,)
                ).fetchall()
            )
        )

    def attributes(self, profile_id: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for kind, value in self.conn.execute(
            "SELECT a.type, a.value FROM identifier_attributes a JOIN identifiers i ON i.id = a.identifier_id"
            " WHERE i.profile_id = ?",
            (profile_id,),
        ):
            out.setdefault(kind, set()).add(value)
        return out


class IdentityGraph:
    def __init__(self, settings: Settings, after_commit: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.settings = settings
        self.rules = Rules(settings)
        self.profiles_merged: MergeHook = Hook("identity.profiles_merged")
        # With a store's after_commit, committed identity facts are cached for the next requests.
        self.after_commit = after_commit
        self.cache = Cache()

    def invalidate(self) -> None:
        """Forget cached identity facts (another process, or a resolution run, changed them)."""
        self.cache.clear()

    def on_external_change(self, conn: sqlite3.Connection) -> None:
        """Another connection wrote: forget the cache only if it changed the identity graph
        (``identity_epoch``, counted by triggers, differs from the count after our own last write)."""
        epoch = _epoch(conn)
        if epoch is None or epoch != self.cache.epoch:
            self.cache.clear()
            self.cache.epoch = epoch

    # -- observations --------------------------------------------------------------------------

    def observe(self, conn: sqlite3.Connection, observations: list[Observation]) -> list[str | None]:
        """Link each observation's identifiers; returns the profile each one belongs to (in order)."""
        txn = GraphTxn(conn, self.cache if self.after_commit is not None else None)
        assigned: list[str | None] = []
        settled = txn.cache.settled if txn.cache is not None else None
        for obs in observations:
            if settled is None or obs.attributes:
                assigned.append(self._observe(txn, obs))
                continue
            key = (tuple(obs.identifiers), obs.alias)
            known = settled.get(key)
            if known is not None:
                # Seen before and nothing about it changed anything: the same profile (or the one it
                # was merged into since). Everything that could change that clears the cache.
                live = txn.live(self.cache.live(known))
                if obs.touch:
                    txn.touched.add(live)
                assigned.append(live)
                continue
            writes = txn.writes
            group = self._observe(txn, obs)
            if group is not None and txn.writes == writes:
                txn.settled[key] = group
            assigned.append(group)
        if self.after_commit is not None:
            epoch = _epoch(conn) if txn.writes else None  # our own changes count too
            self.after_commit(lambda: self.cache.publish(txn, epoch))
        if txn.touched:
            when = max(obs.when for obs in observations) if observations else ""
            conn.executemany(
                "UPDATE profiles SET updated_at = ? WHERE id = ?", [(when, txn.live(p)) for p in txn.touched]
            )
        return [txn.live(p) if p is not None else None for p in assigned]

    def _observe(self, txn: GraphTxn, obs: Observation) -> str | None:
        idents = sorted(
            {self._typed(txn, k, v) for k, v in obs.identifiers if v and self.rules.usable(v)},
            key=lambda kv: PRIORITY[kv[0]],
        )
        if not idents:
            return None
        rows = [(kind, value, txn.identifier(kind, value)) for kind, value in idents]
        attrs: dict[str, set[str]] = {}
        for kind, value in obs.attributes:
            attrs.setdefault(kind, set()).add(value)
        refused: set[int] = set()

        # The anchor is the highest-priority identifier. A new anchor joins the profile of the next
        # known identifier when the rules allow (no throwaway profile), else starts its own.
        kind0, value0, anchor = rows[0]
        if anchor is None:
            group: str | None = None
            for kind, value, row in rows[1:]:
                if row is None or row[2]:
                    continue
                candidate = txn.live(row[1])
                decision = self.rules.check(
                    Counter({kind0: 1}), txn.counts(candidate), attrs, txn.attributes(candidate), alias=obs.alias
                )
                if decision.ok:
                    group = candidate
                else:
                    self._refuse(txn, decision, kind, value, row, [candidate], obs)
                    refused.add(row[0])
                break
            group = group or self._create_profile(txn, obs.when)
            anchor = self._attach(txn, kind0, value0, group, obs.when)
        else:
            group = txn.live(anchor[1])
        self._add_attributes(txn, anchor[0], obs.attributes)
        if obs.touch:
            txn.touched.add(group)

        for kind, value, row in rows[1:]:
            if row is None:
                limit = self.rules.limits.get(kind)
                if limit is not None and not obs.alias and txn.counts(group).get(kind, 0) + 1 > limit:
                    decision = Decision(False, f"limit:{kind}", f"profile {group} already holds {limit} {kind}")
                    self._refuse(txn, decision, kind, value, None, [group], obs)
                    own = self._create_profile(txn, obs.when)
                    row = self._attach(txn, kind, value, own, obs.when)
                else:
                    row = self._attach(txn, kind, value, group, obs.when)
            elif row[0] not in refused and not row[2]:  # a shared identifier no longer links
                other = txn.live(row[1])
                if other != group:
                    decision = self.rules.check(
                        txn.counts(group),
                        txn.counts(other),
                        txn.attributes(group),
                        txn.attributes(other),
                        alias=obs.alias,
                    )
                    if decision.ok and _kept_apart(txn.conn, group, other):
                        decision = Decision(
                            False, "cannot_link", f"a person labelled profiles {group} and {other} as different people"
                        )
                    if decision.ok:
                        group = self.merge(
                            txn.conn,
                            group,
                            other,
                            "alias" if obs.alias else "identifier",
                            {"type": kind, "value": value, "origin": obs.origin},
                            obs.when,
                            txn,
                        )
                    else:
                        self._refuse(txn, decision, kind, value, row, [group, other], obs)
            self._link(txn, anchor[0], row[0], obs)
        return group

    def _refuse(
        self,
        txn: GraphTxn,
        decision: Decision,
        kind: str,
        value: str,
        row: list[Any] | None,
        profiles: list[str],
        obs: Observation,
    ) -> None:
        """Record a refused link; an identifier refused too often is marked shared."""
        self._conflict(txn, decision.rule, decision.message, kind, value, profiles, obs)
        if row is not None:
            self._maybe_shared(txn, kind, value, row)

    @staticmethod
    def _typed(txn: GraphTxn, kind: str, value: str) -> tuple[str, str]:
        """An alias's previousId is an earlier user id if one exists, else an anonymous id."""
        if kind != "previous_id":
            return kind, value
        return ("user_id", value) if txn.identifier("user_id", value) is not None else ("anonymous_id", value)

    # -- writes --------------------------------------------------------------------------------

    def _create_profile(self, txn: GraphTxn, when: str) -> str:
        profile_id = new_profile_id()
        txn.writes += 1
        txn.conn.execute("INSERT INTO profiles (id, created_at, updated_at) VALUES (?, ?, ?)", (profile_id, when, when))
        return profile_id

    def _attach(self, txn: GraphTxn, kind: str, value: str, profile_id: str, when: str) -> list[Any]:
        txn.writes += 1
        cursor = txn.conn.execute(
            "INSERT INTO identifiers (type, value, profile_id, first_seen) VALUES (?, ?, ?, ?)",
            (kind, value, profile_id, when),
        )
        row = [cursor.lastrowid, profile_id, 0]
        txn.ids[(kind, value)] = row
        return row

    @staticmethod
    def _add_attributes(txn: GraphTxn, identifier_id: int, attributes: list[tuple[str, str]]) -> None:
        if attributes:
            txn.writes += 1
            txn.conn.executemany(
                "INSERT OR IGNORE INTO identifier_attributes (identifier_id, type, value) VALUES (?, ?, ?)",
                [(identifier_id, k, v) for k, v in attributes],
            )

    @staticmethod
    def _link(txn: GraphTxn, a: int, b: int, obs: Observation) -> None:
        if txn.linked(a, b):
            return
        txn.writes += 1
        txn.conn.execute(
            "INSERT OR IGNORE INTO identity_links (a, b, kind, origin, created_at) VALUES (?, ?, ?, ?, ?)",
            (a, b, "alias" if obs.alias else "seen", obs.origin, obs.when),
        )
        if not obs.origin.startswith("record:"):  # record links can be withdrawn; never cache them
            txn.pairs.add((a, b))

    def _conflict(
        self, txn: GraphTxn, rule: str, message: str, kind: str, value: str, profiles: list[str], obs: Observation
    ) -> None:
        txn.writes += 1
        txn.conn.execute(
            "INSERT INTO identity_conflicts (rule, message, identifier_type, identifier_value, profile_ids, origin,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rule, message, kind, value, orjson.dumps(profiles).decode(), obs.origin, obs.when),
        )

    def _maybe_shared(self, txn: GraphTxn, kind: str, value: str, row: list[Any]) -> None:
        refused = txn.conn.execute(
            "SELECT count(*) FROM identity_conflicts WHERE identifier_type = ? AND identifier_value = ?", (kind, value)
        ).fetchone()[0]
        if refused >= self.settings.identity_shared_after:
            txn.writes += 1
            txn.conn.execute("UPDATE identifiers SET shared = 1 WHERE id = ?", (row[0],))
            row[2] = 1

    def merge(
        self,
        conn: sqlite3.Connection,
        a: str,
        b: str,
        reason: str,
        details: dict[str, Any],
        when: str,
        txn: GraphTxn | None = None,
    ) -> str:
        """Merge two live profiles; the older survives. Returns the survivor."""
        age = {
            pid: (created, rowid)
            for pid, created, rowid in conn.execute(
                "SELECT id, created_at, rowid FROM profiles WHERE id IN (?, ?)", (a, b)
            )
        }
        survivor, gone = sorted((a, b), key=lambda p: age.get(p, ("", 0)))
        conn.execute("UPDATE identifiers SET profile_id = ? WHERE profile_id = ?", (survivor, gone))
        conn.execute(
            "INSERT OR IGNORE INTO profile_groups (profile_id, group_id, first_seen)"
            " SELECT ?, group_id, first_seen FROM profile_groups WHERE profile_id = ?",
            (survivor, gone),
        )
        conn.execute("DELETE FROM profile_groups WHERE profile_id = ?", (gone,))
        conn.execute("UPDATE events SET profile_id = ? WHERE profile_id = ?", (survivor, gone))
        conn.execute("UPDATE source_records SET profile_id = ? WHERE profile_id = ?", (survivor, gone))
        conn.execute(
            "UPDATE profiles SET merged_into = ?, updated_at = ? WHERE id = ? OR merged_into = ?",
            (survivor, when, gone, gone),
        )
        conn.execute("UPDATE profiles SET updated_at = ? WHERE id = ?", (when, survivor))
        conn.execute(
            "INSERT INTO merges (kind, profile_id, other_id, reason, details, created_at)"
            " VALUES ('merge', ?, ?, ?, ?, ?)",
            (survivor, gone, reason, orjson.dumps(details).decode(), when),
        )
        self.profiles_merged(conn, [(survivor, gone)])
        if txn is not None:
            txn.writes += 1
            txn.redirect[gone] = survivor
            for row in txn.ids.values():
                if row[1] == gone:
                    row[1] = survivor
        return survivor
