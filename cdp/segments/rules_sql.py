"""Compile a rule to one parameterised DuckDB query returning the matching ``profile_id`` values.

Shape of the SQL (the same hand-written shape an analyst would write; layers are left out when not needed)::

    WITH e0_json AS (   -- per event condition: filter events by type, name and window FIRST, then parse the
      SELECT profile_id, json_type(properties, $ptrs) AS p_types,          -- properties once per row (two
             json_extract_string(properties, $ptrs) AS p_strs               -- list reads for all pointers)
      FROM events WHERE type IN ('track','page','screen') AND event = $name AND timestamp >= $lo AND ...),
    e0_vals AS (SELECT profile_id, <typed readings: p0_s string, p0_n number, ...> FROM e0_json),
    e0 AS (SELECT profile_id, <finite number> AS nv0 FROM e0_vals WHERE <where>),
    pr_json AS (        -- ONE scan of profiles; traits and computed each parsed once for all their pointers
      SELECT id, json_type(traits, $ptrs) AS t_types, json_extract_string(traits, $ptrs) AS t_strs, ...),
    pr AS (SELECT id, <typed readings t0_s, t0_n, c0_s, ...> FROM pr_json)
    SELECT DISTINCT pr.id AS profile_id FROM pr
    WHERE <the rule as a two-valued boolean expression over pr.* and semi-joins:
           at least once:          pr.id IN (SELECT profile_id FROM e0)
           thresholds, 0 fails:    pr.id IN (SELECT profile_id FROM e0 GROUP BY profile_id HAVING <thresholds>)
           thresholds, 0 passes:   pr.id NOT IN (... HAVING NOT <thresholds>)    -- "count lt 3" keeps profiles
                                                                                 -- with no events at all
           in_segment:             pr.id IN (SELECT profile_id FROM memberships WHERE segment_key = $k)>

Each event condition is aggregated once per profile (GROUP BY over its own filtered rows), joined by hash
semi-joins; no correlated subqueries. Whether "no matching events" satisfies the thresholds (count 0, sum 0,
avg/min/max undefined) is decided at compile time. Every atom is two-valued, so NOT/AND/OR agree with the
Python evaluator: value tests are wrapped in ``coalesce(..., false)``, and semi-joins compare non-NULL ids
with NULL-free subqueries (left bare so DuckDB plans a SEMI join that prunes the profiles scan).
Every user value, event name, JSON pointer, window bound, instant, profile id and segment key is a ``$n``
parameter; only validated table names are interpolated (quoted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp.segments.rules_model import (
    COMPUTED_TRAITS,
    DATE_PATTERN,
    NAMED_EVENT_TYPES,
    NUMBER_PATTERN,
    AllOf,
    AnyOf,
    EventCondition,
    InSegment,
    Not,
    Rule,
    Threshold,
    TraitCondition,
    as_instant,
    duration_us,
    epoch_us,
    holds_without_events,
    is_computed,
    json_pointer,
    window_of,
)


@dataclass(frozen=True)
class Compiled:
    """``sql`` with ``$1``-style placeholders, and ``params`` to bind in that order."""

    sql: str
    params: list[Any]


_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


def _table(name: str, what: str) -> str:
    if not isinstance(name, str) or not _IDENT_RE.fullmatch(name):
        raise ValueError(f"{what} table name {name!r} must be a plain identifier, optionally qualified (db.table)")
    return ".".join(f'"{part}"' for part in name.split("."))


def _literal(text: str) -> str:
    """A constant of this module (never user input) as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


_NUM_RE_SQL = _literal(NUMBER_PATTERN)
_DATE_RE_SQL = _literal("^" + DATE_PATTERN + "$")
_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')"
_DATE_GROUPS = "['d', 't', 'z', 'sg', 'oh', 'om']"


def _reading(kind: str, types: str, strings: str) -> str:
    """A typed reading of one pointer from its JSON type (``types``) and string value (``strings``)."""
    string = f"CASE WHEN {types} = 'VARCHAR' THEN {strings} END"
    if kind == "t":
        return types
    if kind == "s":
        return string
    if kind == "n":  # may be infinite; uses check isfinite
        return (
            f"TRY_CAST(CASE WHEN {types} IN {_NUMBER_TYPES} OR ({types} = 'VARCHAR' AND "
            f"regexp_full_match({strings}, {_NUM_RE_SQL})) THEN {strings} END AS DOUBLE)"
        )
    if kind == "b":
        return f"CASE WHEN {types} = 'BOOLEAN' THEN {strings} = 'true' END"
    if kind == "r":  # the parts of an ISO date/date-time string, for _instant
        return f"regexp_extract({string}, {_DATE_RE_SQL}, {_DATE_GROUPS})"
    if kind == "a":  # the elements of an array, as JSON
        return f"CASE WHEN {types} = 'ARRAY' THEN json_extract({strings}, '$[*]') END"
    raise ValueError(kind)


def _instant(parts: str) -> str:
    """Microseconds since the epoch from the parts of a date string (same grammar and result as ``as_instant``)."""

    def part(name: str) -> str:
        return f"struct_extract({parts}, '{name}')"

    local = f"{part('d')} || ' ' || CASE WHEN {part('t')} = '' THEN '00:00:00' ELSE {part('t')} END"
    offset = (
        f"(CASE {part('sg')} WHEN '+' THEN 1 WHEN '-' THEN -1 ELSE 0 END) * "
        f"(coalesce(TRY_CAST({part('oh')} AS BIGINT), 0) * 3600 + coalesce(TRY_CAST({part('om')} AS BIGINT), 0) * 60)"
    )
    return (
        f"(CASE WHEN {part('d')} <> '' AND NOT starts_with({part('d')}, '0000') THEN "
        f"epoch_us(TRY_CAST({local} AS TIMESTAMP)) - {offset} * 1000000 END)"
    )


def _element(kind: str, e: str) -> str:
    """A typed reading of an array element ``e`` (JSON), inside a lambda."""
    return _reading(kind, f"json_type({e})", f"json_extract_string({e}, '$')")


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[tuple[str, Any], int] = {}

    def add(self, value: Any, sql_type: str) -> str:
        key = (sql_type, tuple(value) if isinstance(value, list) else value)
        if key not in self._index:
            self.values.append(list(value) if isinstance(value, list | tuple) else value)
            self._index[key] = len(self.values)
        return f"CAST(${self._index[key]} AS {sql_type})"

    def scalar(self, value: Any) -> str:
        if isinstance(value, bool):
            return self.add(value, "BOOLEAN")
        if isinstance(value, str):
            return self.add(value, "VARCHAR")
        return self.add(float(value) + 0.0, "DOUBLE")


class _Source:
    """One JSON column: the pointers a rule reads from it and the typed readings it needs of each."""

    def __init__(self, prefix: str, alias: str) -> None:
        self.prefix = prefix
        self.alias = alias
        self.pointers: list[str] = []
        self.needs: dict[int, set[str]] = {}

    def ref(self, path: tuple[str, ...], kind: str) -> str:
        pointer = json_pointer(path)
        if pointer not in self.pointers:
            self.pointers.append(pointer)
        k = self.pointers.index(pointer)
        self.needs.setdefault(k, set()).add(kind)
        return f"{self.alias}{self.prefix}{k}_{kind}"

    def list_columns(self, doc: str, params: _Params, guard: str | None = None) -> list[str]:
        pointers = params.add(self.pointers, "VARCHAR[]")
        reads = [(f"json_type({doc}, {pointers})", "types"), (f"json_extract_string({doc}, {pointers})", "strs")]
        if guard is None:
            return [f"{expr} AS {self.prefix}_{name}" for expr, name in reads]
        return [f"CASE WHEN {guard} THEN {expr} END AS {self.prefix}_{name}" for expr, name in reads]

    def reading_columns(self) -> list[str]:
        out: list[str] = []
        for k, kinds in sorted(self.needs.items()):
            types, strings = f"{self.prefix}_types[{k + 1}]", f"{self.prefix}_strs[{k + 1}]"
            out.extend(f"{_reading(kind, types, strings)} AS {self.prefix}{k}_{kind}" for kind in sorted(kinds))
        return out


_SIGNS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class _Compiler:
    def __init__(self, now: datetime, computed: frozenset[str]) -> None:
        self.now = now
        self.now_us = epoch_us(now)
        self.computed = computed
        self.params = _Params()
        self.traits = _Source("t", "pr.")
        self.computed_traits = _Source("c", "pr.")
        self.events: list[tuple[EventCondition, list[str], _Source]] = []  # condition, its CTEs, its properties
        self.memberships = ""
        self.events_table = ""
        self.ids: str | None = None

    # -- conditions on one JSON value --------------------------------------------------------------------

    def _eq(self, read: Any, value: Any) -> str:
        """``read(kind)`` gives the SQL of a typed reading of the stored value."""
        if isinstance(value, bool):
            return f"coalesce({read('b')} = {self.params.scalar(value)}, false)"
        if isinstance(value, str):
            return f"coalesce({read('s')} = {self.params.scalar(value)}, false)"
        number = read("n")
        return f"coalesce(isfinite({number}) AND {number} = {self.params.scalar(value)}, false)"

    def _in(self, read: Any, values: Sequence[Any]) -> str:
        strings = sorted({v for v in values if isinstance(v, str)})
        bools = sorted({v for v in values if isinstance(v, bool)})
        numbers = sorted({float(v) + 0.0 for v in values if not isinstance(v, str | bool)})
        terms = []
        if strings:
            terms.append(f"coalesce(list_contains({self.params.add(strings, 'VARCHAR[]')}, {read('s')}), false)")
        if numbers:
            n = read("n")
            terms.append(
                f"coalesce(isfinite({n}) AND list_contains({self.params.add(numbers, 'DOUBLE[]')}, {n}), false)"
            )
        if bools:
            terms.append(f"coalesce(list_contains({self.params.add(bools, 'BOOLEAN[]')}, {read('b')}), false)")
        return "(" + " OR ".join(terms) + ")"

    def _compare(self, read: Any, sign: str, value: Any) -> str:
        if isinstance(value, str):
            return f"coalesce({read('s')} {sign} {self.params.scalar(value)}, false)"
        n = read("n")
        return f"coalesce(isfinite({n}) AND {n} {sign} {self.params.scalar(value)}, false)"

    def test(self, source: _Source, path: tuple[str, ...], op: str, value: Any) -> str:
        """A two-valued SQL boolean: does the value at ``path`` in ``source`` satisfy ``op value``?"""

        def read(kind: str) -> str:
            return source.ref(path, kind)

        if op == "exists":
            return f"coalesce({read('t')} <> 'NULL', false)"
        if op == "not_exists":
            return f"(NOT coalesce({read('t')} <> 'NULL', false))"
        if op == "eq":
            return self._eq(read, value)
        if op == "neq":
            return f"(NOT {self._eq(read, value)})"
        if op == "in":
            return self._in(read, value)
        if op == "not_in":
            return f"(NOT {self._in(read, value)})"
        if op in ("gt", "gte", "lt", "lte"):
            return self._compare(read, _SIGNS[op], value)
        if op == "between":
            low, high = value
            return f"({self._compare(read, '>=', low)} AND {self._compare(read, '<=', high)})"
        if op == "contains":
            element = self._eq(lambda kind: _element(kind, "x_e"), value)
            in_array = f"coalesce(list_bool_or(list_transform({read('a')}, lambda x_e: {element})), false)"
            if isinstance(value, str):
                return f"(coalesce(contains({read('s')}, {self.params.scalar(value)}), false) OR {in_array})"
            return in_array
        if op == "starts_with":
            return f"coalesce(starts_with({read('s')}, {self.params.scalar(value)}), false)"
        instant = _instant(read("r"))
        if op in ("before", "after"):
            sign = "<" if op == "before" else ">"
            return f"coalesce({instant} {sign} {self.params.add(as_instant(value), 'BIGINT')}, false)"
        if op == "within_last":
            low = self.params.add(self.now_us - duration_us(value), "BIGINT")
            return f"coalesce({instant} BETWEEN {low} AND {self.params.add(self.now_us, 'BIGINT')}, false)"
        raise ValueError(f"unknown op {op!r}")

    # -- nodes -------------------------------------------------------------------------------------------

    def node(self, rule: Rule) -> str:
        if isinstance(rule, AllOf):
            return "(" + " AND ".join(self.node(item) for item in rule.items) + ")"
        if isinstance(rule, AnyOf):
            return "(" + " OR ".join(self.node(item) for item in rule.items) + ")"
        if isinstance(rule, Not):
            return f"(NOT {self.node(rule.item)})"
        if isinstance(rule, InSegment):
            key = self.params.add(rule.key, "VARCHAR")
            return (
                f"(pr.id IN (SELECT profile_id FROM {self.memberships} "
                f"WHERE segment_key = {key} AND profile_id IS NOT NULL))"
            )
        if isinstance(rule, TraitCondition):
            source = self.computed_traits if is_computed(rule.path, self.computed) else self.traits
            return self.test(source, rule.path, rule.op, rule.value)
        return self.event(rule)

    def event(self, rule: EventCondition) -> str:
        name, props = self._event_cte(rule)
        if not rule.thresholds:
            return f"(pr.id IN (SELECT profile_id FROM {name}))"
        having = " AND ".join(self._threshold(t, props) for t in rule.thresholds)
        grouped = f"SELECT profile_id FROM {name} GROUP BY profile_id HAVING"
        if holds_without_events(rule):  # profiles without matching events pass: exclude those that fail
            return f"(pr.id NOT IN ({grouped} NOT ({having})))"
        return f"(pr.id IN ({grouped} {having}))"

    def _event_cte(self, rule: EventCondition) -> tuple[str, _Source]:
        """The CTEs giving the matching events of one condition (one row each, with numeric readings)."""
        for i, (known, _, known_props) in enumerate(self.events):
            if known == rule:
                return f"e{i}", known_props
        i = len(self.events)
        window = window_of(rule, self.now)
        types = ", ".join(_literal(t) for t in NAMED_EVENT_TYPES)
        filters = [f"type IN ({types})", f"event = {self.params.add(rule.event, 'VARCHAR')}", "profile_id IS NOT NULL"]
        if window.low is not None:
            filters.append(f"timestamp >= {self.params.add(window.low, 'VARCHAR')}")
        if window.high is not None:
            sign = "<=" if window.high_inclusive else "<"
            filters.append(f"timestamp {sign} {self.params.add(window.high, 'VARCHAR')}")
        if self.ids is not None:
            filters.append(f"profile_id IN (SELECT unnest({self.ids}))")
        scan = f"FROM {self.events_table}\n  WHERE {' AND '.join(filters)}"
        props = _Source("p", "")
        where = [self.test(props, w.path, w.op, w.value) for w in rule.where]
        numbers: dict[str, str] = {}
        for threshold in rule.thresholds:
            if threshold.property is not None:
                reading = props.ref(threshold.path, "n")
                nv = _number_column(threshold, props)
                numbers[reading] = f"CASE WHEN isfinite({reading}) THEN {reading} END AS {nv}"
        if not props.pointers:
            ctes = [f"e{i} AS (\n  SELECT profile_id\n  {scan}\n)"]
        else:
            lists = props.list_columns("properties", self.params)
            readings = props.reading_columns()
            ctes = [
                f"e{i}_json AS (\n  SELECT profile_id, {', '.join(lists)}\n  {scan}\n)",
                f"e{i}_vals AS (\n  SELECT profile_id, {', '.join(readings)}\n  FROM e{i}_json\n)",
                f"e{i} AS (\n  SELECT {', '.join(['profile_id', *numbers.values()])}\n  FROM e{i}_vals"
                + (f"\n  WHERE {' AND '.join(where)}" if where else "")
                + "\n)",
            ]
        self.events.append((rule, ctes, props))
        return f"e{i}", props

    def _threshold(self, threshold: Threshold, props: _Source) -> str:
        """A HAVING term over the matching events of one profile (at least one row)."""
        nv = "" if threshold.property is None else _number_column(threshold, props)
        measured = {
            "count": "count(*)",
            "sum": f"coalesce(sum({nv}), 0)",
            "avg": f"(sum({nv}) / count({nv}))",
            "min": f"min({nv})",
            "max": f"max({nv})",
        }[threshold.measure]
        if isinstance(threshold.value, tuple):
            low, high = threshold.value
            return f"coalesce({measured} BETWEEN {self.params.scalar(low)} AND {self.params.scalar(high)}, false)"
        return f"coalesce({measured} {_SIGNS[threshold.op]} {self.params.scalar(threshold.value)}, false)"

    # -- the query ---------------------------------------------------------------------------------------

    def query(
        self, rule: Rule, *, events: str, profiles: str, memberships: str, profile_ids: Sequence[str] | None
    ) -> Compiled:
        self.memberships = memberships
        self.events_table = events
        self.ids = None if profile_ids is None else self.params.add([str(p) for p in profile_ids], "VARCHAR[]")
        where = self.node(rule)
        ctes = [cte for _, event_ctes, _ in self.events for cte in event_ctes]
        restrict = "" if self.ids is None else f" AND id IN (SELECT unnest({self.ids}))"
        sources = [(s, doc) for s, doc in ((self.traits, "traits"), (self.computed_traits, "computed")) if s.pointers]
        if sources:
            lists = [col for source, doc in sources for col in source.list_columns(doc, self.params)]
            readings = [col for source, _ in sources for col in source.reading_columns()]
            ctes.append(
                f"pr_json AS (\n  SELECT id, {', '.join(lists)}\n  FROM {profiles}\n  WHERE id IS NOT NULL{restrict}\n)"
            )
            ctes.append(f"pr AS (\n  SELECT id, {', '.join(readings)}\n  FROM pr_json\n)")
        else:
            ctes.append(f"pr AS (\n  SELECT id\n  FROM {profiles}\n  WHERE id IS NOT NULL{restrict}\n)")
        sql = "WITH " + ",\n".join(ctes) + f"\nSELECT DISTINCT pr.id AS profile_id\nFROM pr\nWHERE {where}"
        return Compiled(sql, list(self.params.values))


def _number_column(threshold: Threshold, props: _Source) -> str:
    return f"nv{props.pointers.index(json_pointer(threshold.path))}"


def compile_rule(
    rule: Rule,
    *,
    now: datetime,
    events: str = "events",
    profiles: str = "profiles",
    memberships: str = "memberships",
    computed: frozenset[str] = COMPUTED_TRAITS,
    profile_ids: Sequence[str] | None = None,
) -> Compiled:
    """SQL (DuckDB) returning one column ``profile_id``, distinct: the profiles matching ``rule`` at ``now``.

    ``profile_ids`` restricts evaluation to those profiles (bound as one list parameter). Table names must be
    plain identifiers, optionally qualified (``db.events``); ValueError otherwise.
    """
    compiler = _Compiler(now, computed)
    return compiler.query(
        rule,
        events=_table(events, "events"),
        profiles=_table(profiles, "profiles"),
        memberships=_table(memberships, "memberships"),
        profile_ids=profile_ids,
    )
