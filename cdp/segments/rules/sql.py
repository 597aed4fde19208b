"""Compile a rule to one parameterised DuckDB query returning the matching ``profile_id`` values.

Shape of the SQL (the same shape an analyst would write by hand; layers are left out when not needed)::

    WITH e0_json AS (   -- per event condition: filter events by type, name and window FIRST, then parse the
      SELECT profile_id, properties,                       -- properties once per row, all pointers in one call
             json_extract_string(properties, $ptrs) AS p_strs
      FROM events WHERE type IN ('track','page','screen') AND event = $name AND timestamp >= $lo AND ...),
    e0_vals AS (SELECT profile_id, properties, p_strs[1] AS p0_x, p_strs[2] AS p1_x FROM e0_json),
    e0 AS (SELECT profile_id, <number of p1_x> AS nv1 FROM e0_vals WHERE <where conditions on p0_x ...>),
    pr_json AS (        -- ONE scan of profiles; traits and computed each parsed once for all their pointers
      SELECT id, traits, computed, json_extract_string(traits, $ptrs) AS t_strs, ... FROM profiles),
    pr AS (SELECT id, traits, computed, t_strs[1] AS t0_x, ... FROM pr_json)
    SELECT DISTINCT pr.id AS profile_id FROM pr
    WHERE <the rule as a two-valued boolean expression over pr.* and semi-joins:
           at least once:          pr.id IN (SELECT profile_id FROM e0)
           thresholds, 0 fails:    pr.id IN (SELECT profile_id FROM e0 GROUP BY profile_id HAVING <thresholds>)
           thresholds, 0 passes:   pr.id NOT IN (... HAVING NOT <thresholds>)    -- "count lt 3" keeps profiles
                                                                                 -- with no events at all
           in_segment:             pr.id IN (SELECT profile_id FROM memberships WHERE segment_key = $k)>

Value tests read the text of the stored value first (a string's value, or the JSON text of a number,
boolean, array or object) and confirm the rest only for rows that passed, inside CASE: the JSON type with a
second ``json_type`` call (a string "42" and a number 42 have the same text), the exact number grammar after
DuckDB's cheap cast, calendar validity after a text comparison of canonical timestamps
(``YYYY-MM-DDTHH:MM:SS.mmmZ`` orders as text, bounds rounded to milliseconds exactly).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp.segments.rules.model import (
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
    ceil_ms,
    duration_us,
    epoch_us,
    holds_without_events,
    is_computed,
    json_pointer,
    ts_text,
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
_DATE_GROUPS = "['d', 't', 'z', 'sg', 'oh', 'om']"


def _number(text: str) -> str:
    """DuckDB's (lenient) reading of a text as a number: a cheap prefilter, exact only with ``_is_number``."""
    return f"TRY_CAST({text} AS DOUBLE)"


def _is_number(text: str) -> str:
    """Whether a stored value's text is a finite number in the language's sense (a JSON number's text and a
    numeric string both match NUMBER_PATTERN; nothing else does), in which case ``_number`` is its value."""
    return f"(regexp_full_match({text}, {_NUM_RE_SQL}) AND isfinite({_number(text)}))"


def _numeric(text: str, condition: str) -> str:
    """``condition`` (with ``{n}`` for the number) on the numeric reading: prefiltered by DuckDB's cast, then
    confirmed exactly, only for the rows that passed."""
    return f"coalesce(CASE WHEN {condition.format(n=_number(text))} THEN {_is_number(text)} END, false)"


def _number_value(text: str) -> str:
    """The numeric reading itself (NULL when not a number), for aggregates."""
    return f"CASE WHEN {_is_number(text)} THEN {_number(text)} END"


@dataclass(frozen=True)
class _Value:
    """How SQL reads one stored value: its text (NULL when missing or null) and a test of its JSON type.

    The text of a string is the string; of a number, boolean, array or object, its JSON text. The type test
    parses the document again, so it is only ever evaluated (inside CASE) for rows whose text already matched.
    """

    text: str
    type_is: Callable[[str], str]


def _element(e: str) -> _Value:
    """An array element ``e`` (JSON), inside a lambda."""
    return _Value(f"json_extract_string({e}, '$')", lambda kind: f"json_type({e}) = '{kind}'")


def _instant(value: _Value) -> str:
    """Microseconds since the epoch of a stored ISO date/date-time string (same grammar/result as ``as_instant``).

    Without an offset, DuckDB's cast reads it directly; an explicit offset is split off with the grammar's
    groups and subtracted.
    """
    x = value.text

    def part(name: str) -> str:
        return f"struct_extract(regexp_extract({x}, {_DATE_RE_SQL}, {_DATE_GROUPS}), '{name}')"

    local = f"{part('d')} || ' ' || {part('t')}"
    offset = (
        f"(CASE {part('sg')} WHEN '-' THEN -1 ELSE 1 END) * "
        f"(CAST({part('oh')} AS BIGINT) * 3600 + coalesce(TRY_CAST({part('om')} AS BIGINT), 0) * 60) * 1000000"
    )
    return (
        f"(CASE WHEN {_is_instant(value)} "
        f"THEN CASE WHEN contains(substr({x}, 11), '+') OR contains(substr({x}, 11), '-') "
        f"THEN epoch_us(TRY_CAST({local} AS TIMESTAMP)) - {offset} "
        f"ELSE epoch_us(TRY_CAST(rtrim({x}, 'Z') AS TIMESTAMP)) END END)"
    )


def _is_instant(value: _Value) -> str:
    x = value.text
    return f"regexp_full_match({x}, {_DATE_RE_SQL}) AND NOT starts_with({x}, '0000') AND {value.type_is('VARCHAR')}"


# A stored timestamp in the canonical form (YYYY-MM-DDTHH:MM:SS.mmmZ) orders as text like the instants it
# denotes, so it is compared as text with bounds rounded to milliseconds, then checked (only if it passed).
_CANONICAL = "(length({x}) = 24 AND {x}[11] = 'T' AND {x}[24] = 'Z')"
_MIN_US = -62135596800000000  # 0001-01-01T00:00:00Z
_MAX_US = 253402300799999000  # 9999-12-31T23:59:59.999Z


def _bound_text(us: int, *, up: bool) -> str:
    """The canonical text of an instant rounded to milliseconds (up or down), clamped to years 1-9999."""
    if us < _MIN_US:
        return "0000"  # below every canonical timestamp
    if us > _MAX_US:
        return "9999-99"  # above every canonical timestamp
    return ts_text(ceil_ms(us) if up else us // 1000)


_DAY_US = 86_400_000_000


def _day_text(us: int, days: int) -> str | None:
    """``YYYY-MM-DD`` of the instant ``days`` days after ``us`` (UTC); None outside years 1-9999."""
    moved = us + days * _DAY_US
    return None if moved < _MIN_US or moved > _MAX_US else ts_text(moved // 1000)[:10]


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

    def number(self, value: Any) -> str:
        return self.add(float(value) + 0.0, "DOUBLE")


class _Source:
    """One JSON column: the pointers a rule reads from it, extracted together (one parse per row)."""

    def __init__(self, prefix: str, alias: str, doc: str, params: _Params) -> None:
        self.prefix = prefix
        self.alias = alias
        self.doc = doc
        self.params = params
        self.pointers: list[str] = []

    def value(self, path: tuple[str, ...]) -> _Value:
        pointer = json_pointer(path)
        if pointer not in self.pointers:
            self.pointers.append(pointer)
        column = f"{self.alias}{self.prefix}{self.pointers.index(pointer)}_x"

        def type_is(kind: str) -> str:
            return f"json_type({self.alias}{self.doc}, {self.params.add(pointer, 'VARCHAR')}) = '{kind}'"

        return _Value(column, type_is)

    def list_column(self) -> str:
        return f"json_extract_string({self.doc}, {self.params.add(self.pointers, 'VARCHAR[]')}) AS {self.prefix}_strs"

    def reading_columns(self) -> list[str]:
        return [f"{self.prefix}_strs[{k + 1}] AS {self.prefix}{k}_x" for k in range(len(self.pointers))]


_SIGNS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_BOOL_TEXT = {True: "true", False: "false"}


def _typed(value: _Value, kind: str, condition: str) -> str:
    """``condition`` on the text holds and the stored value is of JSON type ``kind`` (checked only then)."""
    return f"coalesce(CASE WHEN {condition} THEN {value.type_is(kind)} END, false)"


# The text of a stored value that is not a string is ``true``, ``false``, a number's (a digit or a sign first),
# an array's (``[``) or an object's (``{``). Where an expected string cannot be such a text (or begin one), a
# match on the text is a string, and the JSON type need not be read (it parses the document again).
_NON_STRING_STARTS = tuple("-+.0123456789[{IiNn")


def _only_a_string_reads(expected: str, *, prefix: bool = False) -> bool:
    """Whether only a string value can have ``expected`` as its text (``prefix``: as the start of its text)."""
    if not expected or expected.startswith(_NON_STRING_STARTS):
        return False
    if prefix:
        return not ("true".startswith(expected) or "false".startswith(expected))
    return expected not in ("true", "false")


def _string_test(value: _Value, condition: str, *, sure: bool) -> str:
    """``condition`` on the text holds and the stored value is a string (``sure``: the text alone says so)."""
    return f"coalesce({condition}, false)" if sure else _typed(value, "VARCHAR", condition)


class _Compiler:
    def __init__(self, now: datetime, computed: frozenset[str]) -> None:
        self.now = now
        self.now_us = epoch_us(now)
        self.computed = computed
        self.params = _Params()
        self.traits = _Source("t", "pr.", "traits", self.params)
        self.computed_traits = _Source("c", "pr.", "computed", self.params)
        self.events: list[tuple[EventCondition, list[str], _Source]] = []  # condition, its CTEs, its properties
        self.memberships = ""
        self.events_table = ""
        self.ids: str | None = None

    # -- conditions on one stored value ------------------------------------------------------------------

    def _eq(self, value: _Value, expected: Any) -> str:
        if isinstance(expected, bool):
            return _typed(value, "BOOLEAN", f"{value.text} = {self.params.add(_BOOL_TEXT[expected], 'VARCHAR')}")
        if isinstance(expected, str):
            condition = f"{value.text} = {self.params.add(expected, 'VARCHAR')}"
            return _string_test(value, condition, sure=_only_a_string_reads(expected))
        return _numeric(value.text, f"{{n}} = {self.params.number(expected)}")

    def _in(self, value: _Value, items: Sequence[Any]) -> str:
        strings = sorted({v for v in items if isinstance(v, str)})
        bools = sorted({_BOOL_TEXT[v] for v in items if isinstance(v, bool)})
        numbers = sorted({float(v) + 0.0 for v in items if not isinstance(v, str | bool)})
        terms = []
        if strings:
            strs = self.params.add(strings, "VARCHAR[]")
            sure = all(_only_a_string_reads(v) for v in strings)
            terms.append(_string_test(value, f"list_contains({strs}, {value.text})", sure=sure))
        if numbers:
            terms.append(_numeric(value.text, f"list_contains({self.params.add(numbers, 'DOUBLE[]')}, {{n}})"))
        if bools:
            terms.append(
                _typed(value, "BOOLEAN", f"list_contains({self.params.add(bools, 'VARCHAR[]')}, {value.text})")
            )
        return "(" + " OR ".join(terms) + ")"

    def _compare(self, value: _Value, sign: str, expected: Any) -> str:
        if isinstance(expected, str):
            return _typed(value, "VARCHAR", f"{value.text} {sign} {self.params.add(expected, 'VARCHAR')}")
        return _numeric(value.text, f"{{n}} {sign} {self.params.number(expected)}")

    def _instant_test(self, value: _Value, op: str, low: int, high: int) -> str:
        """before (< low), after (> high) or within_last (low <= instant <= high) on a stored date string."""
        x = value.text

        def text(us: int, *, up: bool) -> str:
            return self.params.add(_bound_text(us, up=up), "VARCHAR")

        def instant(us: int) -> str:
            return self.params.add(us, "BIGINT")

        if op == "before":
            as_text, general = f"{x} < {text(low, up=True)}", f"{_instant(value)} < {instant(low)}"
        elif op == "after":
            as_text, general = f"{x} > {text(high, up=False)}", f"{_instant(value)} > {instant(high)}"
        else:
            as_text = f"{x} BETWEEN {text(low, up=True)} AND {text(high, up=False)}"
            general = f"{_instant(value)} BETWEEN {instant(low)} AND {instant(high)}"
        check = f"{_is_instant(value)} AND TRY_CAST(rtrim({x}, 'Z') AS TIMESTAMP) IS NOT NULL"
        # Other forms: a date alone, another precision, an offset. A matching text starts with its local date D,
        # and its instant lies within (D - 1 day, D + 2 days) (offsets stay under 24 h), so comparing the first
        # ten characters with the bounds widened by two days drops most rows before the regular expressions.
        days = []
        if op in ("after", "within_last") and (since := _day_text(high if op == "after" else low, -2)):
            days.append(f"substr({x}, 1, 10) >= {self.params.add(since, 'VARCHAR')}")
        if op in ("before", "within_last") and (until := _day_text(low if op == "before" else high, 2)):
            days.append(f"substr({x}, 1, 10) <= {self.params.add(until, 'VARCHAR')}")
        if days:
            general = f"CASE WHEN {' AND '.join(days)} THEN {general} END"
        return (
            f"coalesce(CASE WHEN {_CANONICAL.format(x=x)} THEN CASE WHEN {as_text} THEN {check} END "
            f"ELSE {general} END, false)"
        )

    def test(self, value: _Value, op: str, expected: Any) -> str:
        """A two-valued SQL boolean: does the stored value satisfy ``op expected``?"""
        if op == "exists":
            return f"({value.text} IS NOT NULL)"
        if op == "not_exists":
            return f"({value.text} IS NULL)"
        if op == "eq":
            return self._eq(value, expected)
        if op == "neq":
            return f"(NOT {self._eq(value, expected)})"
        if op == "in":
            return self._in(value, expected)
        if op == "not_in":
            return f"(NOT {self._in(value, expected)})"
        if op in _SIGNS:
            return self._compare(value, _SIGNS[op], expected)
        if op == "between":
            low, high = expected
            if isinstance(low, str):
                low_p, high_p = self.params.add(low, "VARCHAR"), self.params.add(high, "VARCHAR")
                return _typed(value, "VARCHAR", f"{value.text} BETWEEN {low_p} AND {high_p}")
            return _numeric(value.text, f"{{n}} BETWEEN {self.params.number(low)} AND {self.params.number(high)}")
        if op == "contains":
            element = self._eq(_element("x_e"), expected)
            elements = f"json_extract({value.text}, '$[*]')"
            in_array = (
                f"coalesce(CASE WHEN starts_with({value.text}, '[') THEN CASE WHEN {value.type_is('ARRAY')} THEN "
                f"list_bool_or(list_transform({elements}, lambda x_e: {element})) END END, false)"
            )
            if isinstance(expected, str):
                substring = f"contains({value.text}, {self.params.add(expected, 'VARCHAR')})"
                return f"({_typed(value, 'VARCHAR', substring)} OR {in_array})"
            return in_array
        if op == "starts_with":
            condition = f"starts_with({value.text}, {self.params.add(expected, 'VARCHAR')})"
            return _string_test(value, condition, sure=_only_a_string_reads(expected, prefix=True))
        if op in ("before", "after"):
            bound = as_instant(expected)
            assert bound is not None
            return self._instant_test(value, op, bound, bound)
        if op == "within_last":
            return self._instant_test(value, op, self.now_us - duration_us(expected), self.now_us)
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
            return self.test(source.value(rule.path), rule.op, rule.value)
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
        props = _Source("p", "", "properties", self.params)
        where = [self.test(props.value(w.path), w.op, w.value) for w in rule.where]
        numbers: dict[str, str] = {}
        for threshold in rule.thresholds:
            if threshold.property is not None:
                reading = props.value(threshold.path).text
                numbers[reading] = f"{_number_value(reading)} AS {_number_column(threshold, props)}"
        if not props.pointers:
            ctes = [f"e{i} AS (\n  SELECT profile_id\n  {scan}\n)"]
        else:
            readings = props.reading_columns()
            ctes = [
                f"e{i}_json AS (\n  SELECT profile_id, properties, {props.list_column()}\n  {scan}\n)",
                f"e{i}_vals AS (\n  SELECT profile_id, properties, {', '.join(readings)}\n  FROM e{i}_json\n)",
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
            return f"coalesce({measured} BETWEEN {self.params.number(low)} AND {self.params.number(high)}, false)"
        return f"coalesce({measured} {_SIGNS[threshold.op]} {self.params.number(threshold.value)}, false)"

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
        sources = [s for s in (self.traits, self.computed_traits) if s.pointers]
        if sources:
            docs = ", ".join(["id", *(s.doc for s in sources)])
            lists = ", ".join(s.list_column() for s in sources)
            readings = ", ".join(col for s in sources for col in s.reading_columns())
            ctes.append(
                f"pr_json AS (\n  SELECT {docs}, {lists}\n  FROM {profiles}\n  WHERE id IS NOT NULL{restrict}\n)"
            )
            ctes.append(f"pr AS (\n  SELECT {docs}, {readings}\n  FROM pr_json\n)")
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
