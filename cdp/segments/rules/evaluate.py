"""The reference evaluator: the rule language's semantics in plain Python, the oracle for the SQL compiler."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cdp.segments.rules.model import (
    COMPUTED_TRAITS,
    MISSING,
    NAMED_EVENT_TYPES,
    AllOf,
    AnyOf,
    EventCondition,
    InSegment,
    Not,
    Rule,
    Threshold,
    TraitCondition,
    as_instant,
    as_number,
    duration_us,
    epoch_us,
    is_computed,
    lookup,
    threshold_holds,
    window_of,
)


def _eq(stored: Any, expected: Any) -> bool:
    """Typed equality: the rule value's JSON type decides how the stored value is read."""
    if isinstance(expected, bool):
        return isinstance(stored, bool) and stored == expected
    if isinstance(expected, str):
        return isinstance(stored, str) and stored == expected
    number = as_number(stored)
    return number is not None and number == float(expected)


def _order(op: str, stored: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        if not isinstance(stored, str):
            return False
        left: Any = stored
        right: Any = expected
    else:
        left = as_number(stored)
        if left is None:
            return False
        right = float(expected)
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def matches(op: str, expected: Any, stored: Any, now_us: int) -> bool:
    """Whether a stored value (MISSING if absent or null) satisfies ``op`` with the rule's ``expected`` value."""
    if op == "exists":
        return stored is not MISSING
    if op == "not_exists":
        return stored is MISSING
    if op == "neq":
        return not matches("eq", expected, stored, now_us)
    if op == "not_in":
        return not matches("in", expected, stored, now_us)
    if stored is MISSING:
        return False
    if op == "eq":
        return _eq(stored, expected)
    if op == "in":
        return any(_eq(stored, item) for item in expected)
    if op in ("gt", "gte", "lt", "lte"):
        return _order(op, stored, expected)
    if op == "between":
        low, high = expected
        return _order("gte", stored, low) and _order("lte", stored, high)
    if op == "contains":
        if isinstance(stored, list):
            return any(_eq(item, expected) for item in stored)
        return isinstance(stored, str) and isinstance(expected, str) and expected in stored
    if op == "starts_with":
        return isinstance(stored, str) and stored.startswith(expected)
    instant = as_instant(stored)
    if instant is None:
        return False
    if op == "before":
        bound = as_instant(expected)
        return bound is not None and instant < bound
    if op == "after":
        bound = as_instant(expected)
        return bound is not None and instant > bound
    if op == "within_last":
        return now_us - duration_us(expected) <= instant <= now_us
    raise ValueError(f"unknown op {op!r}")


def _measure(threshold: Threshold, count: int, numbers: list[float]) -> float | None:
    if threshold.measure == "count":
        return float(count)
    if threshold.measure == "sum":
        return math.fsum(numbers)
    if not numbers:
        return None
    if threshold.measure == "avg":
        return math.fsum(numbers) / len(numbers)
    return min(numbers) if threshold.measure == "min" else max(numbers)


class _Evaluator:
    def __init__(
        self,
        profiles: Mapping[str, Mapping[str, Any]],
        events: list[Mapping[str, Any]],
        memberships: Mapping[str, set[str]],
        now: datetime,
        computed: frozenset[str],
    ) -> None:
        self.profiles = profiles
        self.events = events
        self.memberships = memberships
        self.now = now
        self.now_us = epoch_us(now)
        self.computed = computed

    def run(self, rule: Rule) -> set[str]:
        return self.node(rule, set(self.profiles))

    def node(self, rule: Rule, universe: set[str]) -> set[str]:
        if isinstance(rule, AllOf):
            result = set(universe)
            for item in rule.items:
                result &= self.node(item, result)
            return result
        if isinstance(rule, AnyOf):
            result = set()
            for item in rule.items:
                result |= self.node(item, universe)
            return result
        if isinstance(rule, Not):
            return universe - self.node(rule.item, universe)
        if isinstance(rule, InSegment):
            return universe & set(self.memberships.get(rule.key, ()))
        if isinstance(rule, TraitCondition):
            return {pid for pid in universe if self.trait(rule, self.profiles[pid])}
        return self.event(rule, universe)

    def trait(self, rule: TraitCondition, profile: Mapping[str, Any]) -> bool:
        source = profile.get("computed") if is_computed(rule.path, self.computed) else profile.get("traits")
        return matches(rule.op, rule.value, lookup(source, rule.path), self.now_us)

    def event(self, rule: EventCondition, universe: set[str]) -> set[str]:
        window = window_of(rule, self.now)
        counts: dict[str, int] = defaultdict(int)
        numbers: dict[tuple[str, int], list[float]] = defaultdict(list)
        for event in self.events:
            pid = event.get("profile_id")
            if pid not in universe or event.get("type") not in NAMED_EVENT_TYPES or event.get("event") != rule.event:
                continue
            if not window.holds(event.get("timestamp")):
                continue
            props = event.get("properties")
            if not all(matches(w.op, w.value, lookup(props, w.path), self.now_us) for w in rule.where):
                continue
            counts[pid] += 1
            for i, threshold in enumerate(rule.thresholds):
                if threshold.measure != "count":
                    number = as_number(lookup(props, threshold.path))
                    if number is not None:
                        numbers[(pid, i)].append(number)
        out = set()
        for pid in universe:
            if not rule.thresholds:
                if counts.get(pid, 0) >= 1:
                    out.add(pid)
                continue
            if all(
                threshold_holds(t.op, _measure(t, counts.get(pid, 0), numbers.get((pid, i), [])), t.value)
                for i, t in enumerate(rule.thresholds)
            ):
                out.add(pid)
        return out


def evaluate(
    rule: Rule,
    *,
    profiles: Mapping[str, Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    memberships: Mapping[str, set[str]],
    now: datetime,
    computed: frozenset[str] = COMPUTED_TRAITS,
) -> set[str]:
    """The ids of ``profiles`` (id -> {"traits": {...}, "computed": {...}}) that match ``rule``.

    ``events`` are dicts with profile_id, type, event, timestamp (stored text) and properties (dict or None);
    ``memberships`` maps a segment key to its members. Same semantics as ``compile_rule``, in plain Python.
    """
    return _Evaluator(profiles, list(events), memberships, now, computed).run(rule)
