"""The typed tree of a segment definition and the value semantics shared by the compiler and the evaluator.

Everything here is pure: paths, numbers, instants and windows are interpreted the same way by
``rules.sql`` (which says it in SQL) and ``rules.evaluate`` (which says it in Python). See ``cdp.segments.rules``
for the language itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeAlias

from cdp.errors import CDPError


class InvalidSegment(CDPError):
    """A segment definition that cannot be used; ``details`` has the JSON-pointer ``path`` and the ``reason``."""

    code = "invalid_segment"
    status = 400


# -- vocabulary ---------------------------------------------------------------------------------------------

KEY_PATTERN = r"^[a-z0-9_][a-z0-9_.-]{0,63}$"
KEY_RE = re.compile(KEY_PATTERN)

SEGMENT_TYPES = ("rule", "cluster", "propensity")
NODE_KINDS = ("all", "any", "not", "in_segment", "trait", "event")
TRAIT_OPS = (
    "eq",
    "neq",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "contains",
    "starts_with",
    "exists",
    "not_exists",
    "before",
    "after",
    "within_last",
)
THRESHOLD_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between")
AGGREGATES = ("sum", "avg", "min", "max")
# Event types whose ``event`` column holds a name a rule can match (track: event name; page/screen: name).
NAMED_EVENT_TYPES = ("track", "page", "screen")

COMPUTED_TRAITS: frozenset[str] = frozenset(
    {
        "order_count",
        "total_revenue",
        "average_order_value",
        "first_seen",
        "last_seen",
        "last_order_at",
        "days_since_last_order",
        "event_count",
        "event_counts",
        "rfm",
        "persona",
        "persona_confidence",
    }
)
COMPUTED_PREFIXES = ("propensity_",)

MAX_DEPTH = 32
MAX_NODES = 1000
MAX_DURATION = timedelta(days=36500)

Scalar: TypeAlias = str | int | float | bool


# -- paths --------------------------------------------------------------------------------------------------


def split_path(text: str) -> tuple[str, ...]:
    """``"address.country"`` -> ``("address", "country")``; ``\\.`` is a literal dot and ``\\\\`` a backslash.

    Raises ValueError (with a reason) for empty segments, other escapes and NUL characters.
    """
    if not text:
        raise ValueError("the path is empty; give a key such as 'plan' or a dotted path such as 'address.country'")
    if "\x00" in text:
        raise ValueError("the path contains a NUL character")
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in (".", "\\"):
                raise ValueError(
                    "a backslash in a path must be followed by '.' (a literal dot in a key) or '\\' (a backslash)"
                )
            current.append(nxt)
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    if any(not p for p in parts):
        raise ValueError("the path has an empty segment (two dots in a row, or a leading or trailing dot)")
    return tuple(parts)


def json_pointer(path: tuple[str, ...]) -> str:
    """RFC 6901 pointer for a path: only ``~`` and ``/`` need escaping, every other character is literal."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


_INDEX_RE = re.compile(r"0|[1-9][0-9]*")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def lookup(doc: object, path: tuple[str, ...]) -> Any:
    """The value at ``path`` (RFC 6901 semantics: a canonical decimal segment indexes an array), or MISSING.

    A JSON null counts as missing.
    """
    current = doc
    for part in path:
        if isinstance(current, Mapping):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list | tuple):
            if not _INDEX_RE.fullmatch(part) or int(part) >= len(current):
                return MISSING
            current = current[int(part)]
        else:
            return MISSING
    return MISSING if current is None else current


def is_computed(path: tuple[str, ...], computed: frozenset[str] = COMPUTED_TRAITS) -> bool:
    """Whether a trait path is looked up in the computed traits (its first segment decides)."""
    return path[0] in computed or path[0].startswith(COMPUTED_PREFIXES)


# -- numbers ------------------------------------------------------------------------------------------------

NUMBER_PATTERN = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER_RE = re.compile(NUMBER_PATTERN)


def is_number(value: object) -> bool:
    """A finite JSON number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def as_number(value: object) -> float | None:
    """The numeric reading of a stored value: a number, or a string that is entirely a decimal number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str) and NUMBER_RE.fullmatch(value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


# -- instants -----------------------------------------------------------------------------------------------

# Groups: 1 date, 2 time, 3 zone, 4 sign, 5 offset hours, 6 offset minutes. The zone needs a time.
DATE_PATTERN = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[T ]((?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?)"
    r"(Z|([+-])([01][0-9]|2[0-3])(?::?([0-5][0-9]))?)?)?"
)
DATE_RE = re.compile(DATE_PATTERN)
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


def as_instant(value: object) -> int | None:
    """Microseconds since the Unix epoch of an ISO-8601 date or date-time string, or None.

    A date alone is midnight UTC, a time without a zone is UTC, fractions beyond microseconds are truncated.
    """
    if not isinstance(value, str):
        return None
    match = DATE_RE.fullmatch(value)
    if match is None:
        return None
    day, time, _zone, sign, off_h, off_m = match.groups()
    try:
        year, month, dom = (int(x) for x in day.split("-"))
        hour = minute = second = micro = 0
        if time:
            hms, _, frac = time.partition(".")
            fields = [int(x) for x in hms.split(":")]
            hour, minute = fields[0], fields[1]
            second = fields[2] if len(fields) > 2 else 0
            micro = int((frac + "000000")[:6]) if frac else 0
        local = datetime(year, month, dom, hour, minute, second, micro)
    except ValueError:
        return None
    offset = 0
    if sign:
        offset = (int(off_h) * 3600 + int(off_m or 0) * 60) * 1_000_000 * (1 if sign == "+" else -1)
    return (local - _EPOCH) // _US - offset


def epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch; a naive datetime is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment.astimezone(UTC).replace(tzinfo=None) - _EPOCH) // _US


def ts_text(ms: int) -> str:
    """The stored fixed-width text (``YYYY-MM-DDTHH:MM:SS.mmmZ``) of a millisecond epoch."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def ceil_ms(us: int) -> int:
    return -((-us) // 1000)


DURATION_RE = re.compile(r"([1-9][0-9]{0,8})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: object) -> timedelta:
    """A duration (``"15m"``, ``"48h"``, ``"30d"``, ``"2w"``); ValueError with a reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"a duration is a string such as '30d', not {json_type_name(text)}")
    match = DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a positive whole number followed by m, h, d or w (e.g. '15m', '30d')"
        )
    window = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if window > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 100 years")
    return window


def json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


# -- the tree -----------------------------------------------------------------------------------------------


def _path_json(path: tuple[str, ...]) -> str:
    return ".".join(p.replace("\\", "\\\\").replace(".", "\\.") for p in path)


def _value_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class TraitCondition:
    """``{"trait": path, "op": op, "value": value}``; ``value`` is None for exists/not_exists."""

    trait: str
    path: tuple[str, ...]
    op: str
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trait": self.trait, "op": self.op}
        if self.op not in ("exists", "not_exists"):
            out["value"] = _value_json(self.value)
        return out


@dataclass(frozen=True)
class PropertyCondition:
    """One ``where`` item of an event condition: ``{"property": path, "op": op, "value": value}``."""

    property: str
    path: tuple[str, ...]
    op: str
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"property": self.property, "op": self.op}
        if self.op not in ("exists", "not_exists"):
            out["value"] = _value_json(self.value)
        return out


@dataclass(frozen=True)
class Threshold:
    """``count`` (property None) or an aggregate ``sum``/``avg``/``min``/``max`` of a numeric property."""

    measure: Literal["count", "sum", "avg", "min", "max"]
    op: str
    value: float | tuple[float, float]
    property: str | None = None
    path: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.property is not None:
            out["property"] = self.property
        out["op"] = self.op
        out["value"] = _value_json(self.value)
        return out


@dataclass(frozen=True)
class EventCondition:
    """Events named ``event`` (track, page or screen) in a window, filtered by ``where``, with thresholds."""

    event: str
    where: tuple[PropertyCondition, ...] = ()
    within: str | None = None
    between: tuple[str, str] | None = None
    thresholds: tuple[Threshold, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.event}
        if self.where:
            out["where"] = [w.to_json() for w in self.where]
        if self.within is not None:
            out["within"] = self.within
        if self.between is not None:
            out["between"] = list(self.between)
        for threshold in self.thresholds:
            out[threshold.measure] = threshold.to_json()
        return out


@dataclass(frozen=True)
class AllOf:
    items: tuple[Rule, ...]

    def to_json(self) -> dict[str, Any]:
        return {"all": [item.to_json() for item in self.items]}


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Rule, ...]

    def to_json(self) -> dict[str, Any]:
        return {"any": [item.to_json() for item in self.items]}


@dataclass(frozen=True)
class Not:
    item: Rule

    def to_json(self) -> dict[str, Any]:
        return {"not": self.item.to_json()}


@dataclass(frozen=True)
class InSegment:
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"in_segment": self.key}


Rule: TypeAlias = AllOf | AnyOf | Not | InSegment | TraitCondition | EventCondition


@dataclass(frozen=True)
class Schedule:
    """``{"every": "15m"}`` or ``{"cron": "0 * * * *"}`` (exactly one is set)."""

    every: str | None = None
    cron: str | None = None

    @property
    def interval(self) -> timedelta | None:
        return None if self.every is None else parse_window(self.every)

    def to_json(self) -> dict[str, str]:
        return {"every": self.every} if self.every is not None else {"cron": self.cron or ""}


@dataclass(frozen=True)
class Definition:
    """A validated segment definition. ``rule`` is set for type "rule", ``model``/``select`` for ML types."""

    key: str
    name: str
    description: str | None = None
    schedule: Schedule | None = None
    rule: Rule | None = None
    type: str = "rule"
    model: Mapping[str, Any] | None = None
    select: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON (what ``validate`` accepts back unchanged)."""
        out: dict[str, Any] = {"key": self.key, "name": self.name}
        if self.description is not None:
            out["description"] = self.description
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_json()
        if self.type != "rule":
            out["type"] = self.type
        if self.rule is not None:
            out["rule"] = self.rule.to_json()
        if self.model is not None:
            out["model"] = dict(self.model)
        if self.select is not None:
            out["select"] = dict(self.select)
        return out


@dataclass(frozen=True)
class Mentions:
    """What a rule reads: event names, trait paths (as written, dotted) and other segments' keys."""

    events: frozenset[str] = frozenset()
    traits: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()

    def trait_keys(self) -> frozenset[str]:
        """The top-level keys of the mentioned trait paths (what an identify call or a trait refresh changes)."""
        return frozenset(split_path(t)[0] for t in self.traits)


def path_text(path: tuple[str, ...]) -> str:
    """The dotted text of a path (escaping dots and backslashes inside keys)."""
    return _path_json(path)


def duration_us(text: str) -> int:
    return parse_window(text) // _US


@dataclass(frozen=True)
class Window:
    """An event condition's window as stored-timestamp text: ``low <= ts`` and ``ts <= high`` (or ``< high``).

    The instants are rounded to the stored millisecond precision so the text comparison is exact: a
    timestamp at millisecond precision is >= an instant iff it is >= the instant rounded up, etc.
    """

    low: str | None = None
    high: str | None = None
    high_inclusive: bool = True

    def holds(self, ts: object) -> bool:
        if self.low is None and self.high is None:
            return True
        if not isinstance(ts, str):
            return False
        if self.low is not None and ts < self.low:
            return False
        if self.high is not None:
            return ts <= self.high if self.high_inclusive else ts < self.high
        return True


def window_of(condition: EventCondition, now: datetime) -> Window:
    if condition.within is not None:
        now_us = epoch_us(now)
        return Window(ts_text(ceil_ms(now_us - duration_us(condition.within))), ts_text(now_us // 1000), True)
    if condition.between is not None:
        start, end = (as_instant(t) for t in condition.between)
        assert start is not None and end is not None
        return Window(ts_text(ceil_ms(start)), ts_text(ceil_ms(end)), False)
    return Window()


def threshold_holds(op: str, measured: float | None, expected: Any) -> bool:
    """Whether an aggregate (None when undefined: avg/min/max of no numbers) satisfies a threshold."""
    if measured is None:
        return False
    if op == "between":
        low, high = expected
        return bool(float(low) <= measured <= float(high))
    value = float(expected)
    if op == "eq":
        return measured == value
    if op == "neq":
        return measured != value
    if op == "gt":
        return measured > value
    if op == "gte":
        return measured >= value
    if op == "lt":
        return measured < value
    return measured <= value


def holds_without_events(condition: EventCondition) -> bool:
    """Whether a profile with no matching events satisfies the condition (count 0, sum 0, the rest undefined)."""
    if not condition.thresholds:
        return False
    empty: dict[str, float | None] = {"count": 0.0, "sum": 0.0, "avg": None, "min": None, "max": None}
    return all(threshold_holds(t.op, empty[t.measure], t.value) for t in condition.thresholds)
