"""The segment rule language: validation, dependencies, SQL compilation and a reference evaluator.

Definitions follow the public contract in DESIGN.md ("Segment definitions")::

    {"key": "high_value", "name": "...", "description": "...", "schedule": {"every": "15m"} | {"cron": "0 * * * *"},
     "rule": <node>}                                     # or "type": "cluster"|"propensity", "model", "select"

Nodes: ``{"all": [...]}``, ``{"any": [...]}`` (non-empty), ``{"not": node}``, ``{"in_segment": "key"}``, a trait
condition ``{"trait", "op", "value"}`` and an event condition ``{"event", "where", "within"|"between", "count",
"sum", "avg", "min", "max"}``. ``validate`` refuses anything else (unknown keys, typos such as "wihtin", bad
durations, ops and values that do not fit) with ``InvalidSegment`` whose details name the JSON-pointer ``path``
(e.g. ``/rule/all/0/count/op``) and the ``reason``, with a hint how to fix it.

Semantics (the compiler, ``compile_rule``, and the evaluator, ``evaluate``, implement exactly these):

Paths. ``trait`` and ``property`` are dotted paths into the JSON document (``address.country``); a key that
itself contains a dot is written with ``\\.`` (``"utm\\.source"``), a backslash as ``\\\\``. A segment that is
a whole decimal number indexes an array (``items.0``). A trait path whose first segment is a computed trait
name (``COMPUTED_TRAITS``: order_count, total_revenue, average_order_value, first_seen, last_seen,
last_order_at, days_since_last_order, event_count, event_counts.*, rfm.*) or starts with ``propensity_`` is
read from the profile's computed traits, every other path from its traits. A JSON null counts as missing.

Values are typed by the rule, not by the data:
  * a number in the rule compares numerically with a stored number or a stored string that is entirely a
    decimal number (``"42"``, ``"-1.5e3"``; no spaces, no ``inf``/``nan``): ``{"op": "eq", "value": 42}``
    matches 42, 42.0 and "42". Non-finite numbers are not numbers;
  * a string in the rule compares only with stored strings, exactly (case-sensitive; ``gt``/``lt``/``between``
    compare by Unicode code point): ``"42"`` does not match the number 42;
  * a boolean compares only with stored booleans (not with "true").
Ops: ``eq``; ``neq`` is exactly NOT eq; ``in`` (eq with any list item, items may mix types); ``not_in`` is NOT
in; ``gt gte lt lte`` (number or string value); ``between`` [low, high] inclusive (two numbers or two
strings); ``contains``: substring of a stored string (string value), or any element of a stored array eq the
value; ``starts_with`` (string); ``exists`` / ``not_exists`` (no value: present and not null, or not);
``before`` / ``after``: the stored value read as an instant is strictly before/after the given ISO date or
date-time; ``within_last "7d"``: now - 7d <= instant <= now. Instants: ISO-8601 ``YYYY-MM-DD`` (midnight
UTC), optionally ``[T ]HH:MM[:SS[.fraction]]`` and ``Z`` or an offset ``+HH[:MM]``; no zone means UTC;
compared at microsecond precision. Stored values that are not such strings (numbers, epochs) never match.

Missing traits: no op is satisfied by a missing (or null) value except ``not_exists``, ``neq`` and ``not_in``,
which ARE satisfied ("plan is not pro" includes profiles without a plan; SQL's NULL rule is not used). Use
``{"all": [{"trait": t, "op": "exists"}, {"trait": t, "op": "neq", ...}]}`` for the stricter reading.

Event conditions. ``event`` matches events of type track (event name), page or screen (page/screen name)
whose ``event`` column equals it exactly; identify/group/alias never match. ``where`` is a list of property
conditions (same ops and typing as traits, on ``properties``) that must all hold. The window is ``within``
("48h": now - 48h <= timestamp <= now, events stamped in the future are left out) or ``between`` [from, to]
(ISO, from inclusive, to EXCLUSIVE, so consecutive windows do not overlap), or all time when absent; bounds
are compared with the stored millisecond text exactly. Thresholds ``count``, ``sum``, ``avg``, ``min``,
``max`` ({"op", "value"}, aggregates also "property"; ops eq neq gt gte lt lte between) must all hold;
aggregates read the property's numeric values as above and ignore events where it is not numeric. Over no
events (or no numeric values) count = 0 and sum = 0, while avg/min/max are undefined and fail every op. So a
profile with no matching events satisfies "count lt 3" and "sum lt 100", and is included; without thresholds
the condition means "at least once"; "did not" is ``{"not": <event condition>}``. Sums are double-precision
(the last bit can depend on summation order).

``in_segment`` holds for profiles in ``memberships`` under that key (the members stored by the last run of
that segment: compute dependencies first, ``evaluation_order``). ``check_cycles`` refuses loops and unknown
keys (a child of a cluster segment, ``personas.3``, is known when ``personas`` is).

Comparing windows. A condition cannot compare two windows with each other ("fewer sessions this week than
last week"); express it with fixed thresholds over two windows, e.g. potential churners::

    {"all": [{"event": "Session Started", "between": ["<14 days ago>", "<7 days ago>"], "count": {"op": "gte",
              "value": 2}},
             {"event": "Session Started", "within": "7d", "count": {"op": "lt", "value": 2}}]}

``between`` takes absolute dates (the caller rewrites them before each run), or use relative windows only:
``within "14d" count gte 3`` and ``within "7d" count lt 2`` means at most 1 session this week and at least
2 in the week before (3 minus at most 1), so more last week than this week, for the usual thresholds.

Data (what ``compile_rule`` runs over): ``events(profile_id, type, event, timestamp, properties)`` with
timestamps as fixed-width UTC text ``YYYY-MM-DDTHH:MM:SS.mmmZ``, ``profiles(id, traits, computed)`` with JSON
text (live profiles only, unique ids; valid JSON or NULL: DuckDB raises on malformed JSON), and
``memberships(segment_key, profile_id)``.

SQL shape (details in ``rules.sql``): per event condition one filtered scan of events (type, name, window
first) and one GROUP BY profile_id; one scan of profiles parsing each JSON column once for all its paths;
event conditions and in_segment joined as hash semi-joins (IN / NOT IN), never correlated subqueries; every
value, name, path, bound and key is a ``$n`` parameter.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping

from cdp.segments.rules.evaluate import evaluate, matches
from cdp.segments.rules.model import (
    COMPUTED_PREFIXES,
    COMPUTED_TRAITS,
    AllOf,
    AnyOf,
    Definition,
    EventCondition,
    InSegment,
    InvalidSegment,
    Mentions,
    Not,
    PropertyCondition,
    Rule,
    Schedule,
    Threshold,
    TraitCondition,
    is_computed,
    split_path,
)
from cdp.segments.rules.schema import SCHEMA, validate, validate_rule
from cdp.segments.rules.sql import Compiled, compile_rule

__all__ = [
    "COMPUTED_PREFIXES",
    "COMPUTED_TRAITS",
    "SCHEMA",
    "AllOf",
    "AnyOf",
    "Compiled",
    "Definition",
    "EventCondition",
    "InSegment",
    "InvalidSegment",
    "Mentions",
    "Not",
    "PropertyCondition",
    "Rule",
    "Schedule",
    "Threshold",
    "TraitCondition",
    "check_cycles",
    "compile_rule",
    "evaluate",
    "evaluation_order",
    "is_computed_trait",
    "is_time_dependent",
    "matches",
    "mentions",
    "reads_events",
    "validate",
    "validate_rule",
]


def _walk(rule: Rule, path: str = "/rule") -> Iterator[tuple[Rule, str]]:
    """Every node with its JSON-pointer path inside the definition."""
    yield rule, path
    if isinstance(rule, AllOf | AnyOf):
        kind = "all" if isinstance(rule, AllOf) else "any"
        for i, item in enumerate(rule.items):
            yield from _walk(item, f"{path}/{kind}/{i}")
    elif isinstance(rule, Not):
        yield from _walk(rule.item, f"{path}/not")


def mentions(rule: Rule) -> Mentions:
    """Event names, trait paths and segment keys the rule reads (to pick what to re-evaluate on a change).

    A rule that mentions computed traits (``is_computed_trait``) can change with any event of the profile.
    """
    events: set[str] = set()
    traits: set[str] = set()
    segments: set[str] = set()
    for node, _ in _walk(rule):
        if isinstance(node, EventCondition):
            events.add(node.event)
        elif isinstance(node, TraitCondition):
            traits.add(node.trait)
        elif isinstance(node, InSegment):
            segments.add(node.key)
    return Mentions(frozenset(events), frozenset(traits), frozenset(segments))


def reads_events(rules: Iterable[Rule]) -> tuple[frozenset[str], frozenset[str]]:
    """The event names these rules' event conditions match, and those whose properties they read (``where`` or
    a threshold on a property): what a session that computes them needs of the events table."""
    names: set[str] = set()
    with_properties: set[str] = set()
    for rule in rules:
        for node, _ in _walk(rule):
            if isinstance(node, EventCondition):
                names.add(node.event)
                if node.where or any(t.property is not None for t in node.thresholds):
                    with_properties.add(node.event)
    return frozenset(names), frozenset(with_properties)


def is_computed_trait(trait: str, computed: frozenset[str] = COMPUTED_TRAITS) -> bool:
    """Whether a trait path (as written in a rule) is read from the computed traits."""
    return is_computed(split_path(trait), computed)


def is_time_dependent(rule: Rule) -> bool:
    """Whether membership can change with the clock alone (a ``within`` window or ``within_last``)."""
    for node, _ in _walk(rule):
        if isinstance(node, EventCondition) and (
            node.within is not None or any(w.op == "within_last" for w in node.where)
        ):
            return True
        if isinstance(node, TraitCondition) and node.op == "within_last":
            return True
    return False


def _resolve(ref: str, rules: Mapping[str, Rule | None]) -> str | None:
    """The segment a reference depends on: itself, or the parent of a cluster child (``personas.3``)."""
    if ref in rules:
        return ref
    parent = ref.rsplit(".", 1)[0] if "." in ref else None
    if parent is not None and parent in rules and rules[parent] is None:
        return parent
    return None


def _edges(rules: Mapping[str, Rule | None]) -> dict[str, list[tuple[str, str]]]:
    """For each segment, its dependencies with the path of the referring node; unknown keys raise."""
    out: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(rules):
        rule = rules[key]
        deps: list[tuple[str, str]] = []
        if rule is not None:
            for node, path in _walk(rule):
                if not isinstance(node, InSegment):
                    continue
                target = _resolve(node.key, rules)
                where = f"{path}/in_segment"
                if target is None:
                    reason = f"segment {key!r} refers to unknown segment {node.key!r}; create it first or fix the key"
                    raise InvalidSegment(
                        f"invalid segment definition at {where}: {reason}",
                        {"path": where, "reason": reason, "segment": key, "in_segment": node.key},
                    )
                deps.append((target, where))
        out[key] = deps
    return out


MAX_IN_SEGMENT_DEPTH = 16  # a segment may depend on segments that depend on ... at most this many levels


def check_cycles(rules: Mapping[str, Rule | None]) -> None:
    """Refuse in_segment loops (naming the cycle, ``a -> b -> a``), references to unknown segments, and chains
    of in_segment references deeper than :data:`MAX_IN_SEGMENT_DEPTH`.

    ``rules`` maps every segment key to its rule (None for machine-learned segments). The walk keeps its own
    stack (no recursion), so any chain is answered with a clear error.
    """
    edges = _edges(rules)
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    depth: dict[str, int] = {}  # the longest chain of in_segment references below each key
    for root in sorted(edges):
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, Iterator[tuple[str, str]]]] = [(root, iter(edges.get(root, [])))]
        taken: list[tuple[str, str]] = []  # the (key, where) reference that led to each stack entry after the root
        while stack:
            key, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                stack.pop()
                state[key] = 2
                depth[key] = max((depth[t] + 1 for t, _ in edges.get(key, [])), default=0)
                if depth[key] > MAX_IN_SEGMENT_DEPTH:
                    where = edges[key][0][1]
                    reason = (
                        f"segment {key!r} depends on a chain of {depth[key]} in_segment references; at most "
                        f"{MAX_IN_SEGMENT_DEPTH} are allowed: refer to a segment nearer the end of the chain"
                    )
                    raise InvalidSegment(
                        f"invalid segment definition at {where}: {reason}",
                        {"path": where, "reason": reason, "segment": key, "limit": MAX_IN_SEGMENT_DEPTH},
                    )
                if taken:
                    taken.pop()
                continue
            target, where = step
            if state.get(target) == 1:
                trail = [*taken, (key, where)]
                first = next(i for i, (k, _) in enumerate(trail) if k == target)
                loop = [k for k, _ in trail[first:]] + [target]
                cycle = " -> ".join(loop)
                at = trail[first][1]
                reason = f"in_segment references form a loop: {cycle}; remove one of these in_segment conditions"
                raise InvalidSegment(
                    f"invalid segment definition at {at}: {reason}",
                    {"path": at, "reason": reason, "segment": loop[0], "cycle": loop},
                )
            if state.get(target) is None:
                state[target] = 1
                taken.append((key, where))
                stack.append((target, iter(edges.get(target, []))))


def evaluation_order(rules: Mapping[str, Rule | None]) -> list[str]:
    """Every key of ``rules``, dependencies before the segments that use them (ties in key order)."""
    check_cycles(rules)
    edges = _edges(rules)
    waiting = {key: {t for t, _ in deps} for key, deps in edges.items()}
    users: dict[str, set[str]] = {key: set() for key in edges}
    for key, deps in waiting.items():
        for dep in deps:
            users[dep].add(key)
    ready = [key for key, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        key = heapq.heappop(ready)
        order.append(key)
        for user in sorted(users[key]):
            waiting[user].discard(key)
            if not waiting[user]:
                heapq.heappush(ready, user)
    return order
