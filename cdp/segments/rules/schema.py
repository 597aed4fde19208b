"""The published JSON Schema of a segment definition, and ``validate`` (which checks what a schema cannot)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, NoReturn

from cdp.jsonlimits import out_of_range
from cdp.ml import schema as ml_schema
from cdp.segments.rules.model import (
    AGGREGATES,
    DATE_PATTERN,
    KEY_PATTERN,
    KEY_RE,
    MAX_DEPTH,
    MAX_NODES,
    NODE_KINDS,
    SEGMENT_TYPES,
    THRESHOLD_OPS,
    TRAIT_OPS,
    AllOf,
    AnyOf,
    Definition,
    EventCondition,
    InSegment,
    InvalidSegment,
    Not,
    PropertyCondition,
    Rule,
    Schedule,
    Threshold,
    TraitCondition,
    as_instant,
    is_number,
    json_type_name,
    parse_window,
    split_path,
)

# -- the schema ---------------------------------------------------------------------------------------------

_DURATION = {"type": "string", "pattern": r"^[1-9][0-9]{0,8}[mhdw]$", "description": "e.g. 15m, 48h, 30d, 2w"}
_ISO = {"type": "string", "pattern": "^" + DATE_PATTERN + "$", "description": "ISO-8601 date or date-time"}
_SCALAR = {"type": ["string", "number", "boolean"]}
_ORDERED = {"type": ["string", "number"]}
_PATH = {
    "type": "string",
    "pattern": r"^(?:[^.\\]|\\[.\\])+(?:\.(?:[^.\\]|\\[.\\])+)*$",
    "description": r"dotted path; '\.' is a literal dot inside a key, '\\' a backslash",
}


def _op_variants(subject: str) -> list[dict[str, Any]]:
    """The op/value pairs a trait or property condition may take, one schema per family of ops."""

    def variant(ops: list[str], value: dict[str, Any] | None) -> dict[str, Any]:
        props: dict[str, Any] = {subject: {"$ref": "#/$defs/path"}, "op": {"enum": ops}}
        required = [subject, "op"]
        if value is not None:
            props["value"] = value
            required.append("value")
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    return [
        variant(["eq", "neq", "contains"], _SCALAR),
        variant(["in", "not_in"], {"type": "array", "items": _SCALAR, "minItems": 1}),
        variant(["gt", "gte", "lt", "lte"], _ORDERED),
        variant(
            ["between"],
            {
                "oneOf": [
                    {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                    {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                ]
            },
        ),
        variant(["starts_with"], {"type": "string"}),
        variant(["exists", "not_exists"], None),
        variant(["before", "after"], _ISO),
        variant(["within_last"], _DURATION),
    ]


def _threshold(with_property: bool) -> dict[str, Any]:
    item = {"type": "number"} if with_property else {"type": "integer", "minimum": 0}
    number_value = {
        "oneOf": [item, {"type": "array", "items": item, "minItems": 2, "maxItems": 2}],
        "description": "a number (count: a whole number), or [low, high] for between",
    }
    props: dict[str, Any] = {"op": {"enum": list(THRESHOLD_OPS)}, "value": number_value}
    required = ["op", "value"]
    if with_property:
        props = {"property": {"$ref": "#/$defs/path"}, **props}
        required = ["property", *required]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:cdp:segment-definition",
    "title": "Segment definition",
    "description": "A rule-based segment (rule) or a machine-learned one (type cluster or propensity with a model).",
    "type": "object",
    "properties": {
        "key": {"type": "string", "pattern": KEY_PATTERN},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": ["string", "null"], "maxLength": 2000},
        "schedule": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {"every": _DURATION},
                    "required": ["every"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"cron": {"type": "string", "description": "five-field crontab, UTC"}},
                    "required": ["cron"],
                    "additionalProperties": False,
                },
            ]
        },
        "type": {"enum": list(SEGMENT_TYPES), "default": "rule"},
        "consent": {
            "description": "consent categories members must have granted (context.consent.categoryPreferences)",
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "maxItems": 20,
        },
        "rule": {"$ref": "#/$defs/node"},
        "model": {
            "description": "type cluster: a cluster model; type propensity: a propensity model",
            "oneOf": [{"$ref": "#/$defs/cluster_model"}, {"$ref": "#/$defs/propensity_model"}],
        },
        "select": {
            "description": "propensity segments: who is a member",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"top_quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
                    "required": ["top_quantile"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"threshold": {"type": "number", "minimum": 0, "maximum": 1}},
                    "required": ["threshold"],
                    "additionalProperties": False,
                },
            ],
        },
    },
    "required": ["key", "name"],
    "additionalProperties": False,
    "oneOf": [
        {
            "properties": {"type": {"const": "rule"}},
            "required": ["rule"],
            "not": {"anyOf": [{"required": ["model"]}, {"required": ["select"]}]},
        },
        {
            "properties": {"type": {"enum": ["cluster", "propensity"]}},
            "required": ["type", "model"],
            "not": {"required": ["rule"]},
        },
    ],
    "$defs": {
        "cluster_model": ml_schema.CLUSTER_MODEL,
        "propensity_model": ml_schema.PROPENSITY_MODEL,
        "path": _PATH,
        "node": {
            "oneOf": [
                {"$ref": "#/$defs/all"},
                {"$ref": "#/$defs/any"},
                {"$ref": "#/$defs/not"},
                {"$ref": "#/$defs/in_segment"},
                {"$ref": "#/$defs/trait"},
                {"$ref": "#/$defs/event"},
            ]
        },
        "all": {
            "type": "object",
            "properties": {"all": {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 1}},
            "required": ["all"],
            "additionalProperties": False,
        },
        "any": {
            "type": "object",
            "properties": {"any": {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 1}},
            "required": ["any"],
            "additionalProperties": False,
        },
        "not": {
            "type": "object",
            "properties": {"not": {"$ref": "#/$defs/node"}},
            "required": ["not"],
            "additionalProperties": False,
        },
        "in_segment": {
            "type": "object",
            "properties": {"in_segment": {"type": "string", "pattern": KEY_PATTERN}},
            "required": ["in_segment"],
            "additionalProperties": False,
        },
        "trait": {"oneOf": _op_variants("trait")},
        "property_condition": {"oneOf": _op_variants("property")},
        "event": {
            "type": "object",
            "properties": {
                "event": {"type": "string", "minLength": 1},
                "where": {"type": "array", "items": {"$ref": "#/$defs/property_condition"}},
                "within": _DURATION,
                "between": {"type": "array", "items": _ISO, "minItems": 2, "maxItems": 2},
                "count": {"$ref": "#/$defs/count"},
                **{name: {"$ref": "#/$defs/aggregate"} for name in AGGREGATES},
            },
            "required": ["event"],
            "additionalProperties": False,
            "not": {"required": ["within", "between"]},
        },
        "count": _threshold(with_property=False),
        "aggregate": _threshold(with_property=True),
    },
}


# -- validation ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("key", "name", "description", "schedule", "type", "rule", "model", "select", "consent")
_EVENT_KEYS = ("event", "where", "within", "between", "count", *AGGREGATES)
_NO_VALUE_OPS = ("exists", "not_exists")


def _pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _fail(path: tuple[str | int, ...], reason: str) -> NoReturn:
    where = _pointer(path) or "/"
    raise InvalidSegment(f"invalid segment definition at {where}: {reason}", {"path": where, "reason": reason})


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}allowed: {', '.join(choices)}"


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], path: tuple[str | int, ...], what: str) -> None:
    for name in obj:
        if not isinstance(name, str) or name not in allowed:
            _fail((*path, str(name)), f"unknown key {name!r} in {what}; {_suggest(str(name), allowed)}")


def _object(value: object, path: tuple[str | int, ...], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(path, f"{what} must be a JSON object, not {json_type_name(value)}")
    return value


def _string(value: object, path: tuple[str | int, ...], what: str, *, nonempty: bool = True) -> str:
    if not isinstance(value, str):
        _fail(path, f"{what} must be a string, not {json_type_name(value)}")
    if nonempty and not value.strip():
        _fail(path, f"{what} must not be empty")
    return value


def _required(obj: Mapping[str, Any], name: str, path: tuple[str | int, ...], what: str) -> Any:
    if name not in obj:
        _fail((*path, name), f"{what} needs {name!r}")
    return obj[name]


def _path_of(value: object, path: tuple[str | int, ...], what: str) -> tuple[str, ...]:
    text = _string(value, path, what)
    try:
        return split_path(text)
    except ValueError as exc:
        _fail(path, f"{what} {text!r}: {exc}")


def _window(value: object, path: tuple[str | int, ...]) -> str:
    try:
        parse_window(value)
    except ValueError as exc:
        _fail(path, str(exc))
    assert isinstance(value, str)
    return value


def _instant(value: object, path: tuple[str | int, ...]) -> str:
    if not isinstance(value, str) or as_instant(value) is None:
        shown = repr(value) if isinstance(value, str) else json_type_name(value)
        _fail(
            path,
            f"{shown} is not an ISO-8601 date or date-time; write e.g. '2026-01-31' (midnight UTC) "
            "or '2026-01-31T12:00:00Z' (an offset such as +02:00 is allowed)",
        )
    return value


def _number(value: object, path: tuple[str | int, ...], what: str) -> float:
    if not is_number(value):
        _fail(path, f"{what} must be a finite number, not {json_type_name(value)}")
    assert isinstance(value, int | float)
    return value


def _scalar(value: object, path: tuple[str | int, ...], op: str) -> Any:
    if isinstance(value, str | bool) or is_number(value):
        return value
    if isinstance(value, int | float):
        _fail(path, f"{op} needs a finite number")
    _fail(
        path,
        f"{op} compares with a string, number or boolean, not {json_type_name(value)}"
        + ("; use exists / not_exists to test for a missing value" if value is None else ""),
    )


def _pair(value: object, path: tuple[str | int, ...], op: str, *, strings: bool) -> tuple[Any, Any]:
    kinds = "two numbers or two strings" if strings else "two numbers"
    if not isinstance(value, list | tuple) or len(value) != 2:
        shown = f"{len(value)} values" if isinstance(value, list | tuple) else json_type_name(value)
        _fail(path, f"{op} needs [low, high] ({kinds}, both inclusive), not {shown}")
    low, high = value
    both_numbers = is_number(low) and is_number(high)
    if not both_numbers and not (strings and isinstance(low, str) and isinstance(high, str)):
        _fail(path, f"{op} needs [low, high] with {kinds}, not {json_type_name(low)} and {json_type_name(high)}")
    if low > high:
        _fail(path, f"{op} needs low <= high; swap {low!r} and {high!r}")
    return (low, high)


def _op_value(node: Mapping[str, Any], path: tuple[str | int, ...], what: str) -> tuple[str, Any]:
    """Check ``op`` and ``value`` of a trait or property condition; the value in its stored form."""
    op = _required(node, "op", path, what)
    if not isinstance(op, str) or op not in TRAIT_OPS:
        _fail((*path, "op"), f"unknown op {op!r}; {_suggest(str(op), TRAIT_OPS)}")
    vpath = (*path, "value")
    if op in _NO_VALUE_OPS:
        if "value" in node:
            _fail(vpath, f"{op} takes no value; remove 'value'")
        return op, None
    value = _required(node, "value", path, f"{what} with op {op!r}")
    if op in ("eq", "neq", "contains"):
        return op, _scalar(value, vpath, op)
    if op in ("in", "not_in"):
        if not isinstance(value, list | tuple):
            _fail(vpath, f'{op} needs a list of values, e.g. ["US", "CA"], not {json_type_name(value)}')
        if not value:
            _fail(vpath, f"{op} needs at least one value")
        return op, tuple(_scalar(item, (*vpath, i), op) for i, item in enumerate(value))
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, str) or is_number(value):
            return op, value
        _fail(vpath, f"{op} compares with a number (or a string, compared as text), not {json_type_name(value)}")
    if op == "between":
        return op, _pair(value, vpath, op, strings=True)
    if op == "starts_with":
        return op, _string(value, vpath, "starts_with's value", nonempty=False)
    if op in ("before", "after"):
        return op, _instant(value, vpath)
    return op, _window(value, vpath)  # within_last


def _threshold_of(measure: str, value: object, path: tuple[str | int, ...]) -> Threshold:
    node = _object(value, path, f"the {measure} threshold")
    allowed = ("op", "value") if measure == "count" else ("property", "op", "value")
    if measure == "count" and "property" in node:
        _fail((*path, "property"), "count counts events and takes no property; use sum/avg/min/max for a property")
    _check_keys(node, allowed, path, f"the {measure} threshold")
    prop: str | None = None
    ppath: tuple[str, ...] = ()
    if measure != "count":
        raw = _required(node, "property", path, f"{measure} (the property whose numeric values are aggregated)")
        ppath = _path_of(raw, (*path, "property"), "property")
        prop = raw
    op = _required(node, "op", path, f"the {measure} threshold")
    if not isinstance(op, str) or op not in THRESHOLD_OPS:
        _fail((*path, "op"), f"unknown op {op!r} for a threshold; {_suggest(str(op), THRESHOLD_OPS)}")
    raw_value = _required(node, "value", path, f"the {measure} threshold")
    vpath = (*path, "value")
    number: float | tuple[float, float]
    if op == "between":
        number = _pair(raw_value, vpath, "between", strings=False)
    else:
        number = _number(raw_value, vpath, f"the {measure} threshold's value")
    if measure == "count":
        for item in number if isinstance(number, tuple) else (number,):
            if not (float(item).is_integer() and item >= 0):
                _fail(vpath, f"count compares with whole numbers >= 0, not {item!r}")
    return Threshold(measure, op, number, prop, ppath)  # type: ignore[arg-type]


class _Walker:
    def __init__(self) -> None:
        self.nodes = 0

    def node(self, value: object, path: tuple[str | int, ...], depth: int) -> Rule:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            _fail(path, f"the rule has more than {MAX_NODES} nodes; split it into segments joined with in_segment")
        if depth > MAX_DEPTH:
            _fail(path, f"the rule nests deeper than {MAX_DEPTH} levels; flatten it or use in_segment")
        node = _object(value, path, "a rule node")
        kinds = [k for k in NODE_KINDS if k in node]
        if not kinds:
            for name in node:
                if not isinstance(name, str) or name not in ("op", "value", *_EVENT_KEYS):
                    _fail((*path, str(name)), f"unknown key {name!r}; {_suggest(str(name), NODE_KINDS)}")
            _fail(path, f"a rule node needs one of {', '.join(NODE_KINDS)}")
        if len(kinds) > 1:
            _fail(
                (*path, kinds[1]),
                f"a rule node has exactly one of {', '.join(NODE_KINDS)}, not both {kinds[0]!r} and {kinds[1]!r}; "
                "combine conditions with all/any",
            )
        kind = kinds[0]
        if kind in ("all", "any"):
            _check_keys(node, (kind,), path, f"an {kind!r} node")
            items = node[kind]
            if not isinstance(items, list | tuple):
                _fail((*path, kind), f"{kind} needs a list of conditions, not {json_type_name(items)}")
            if not items:
                _fail((*path, kind), f"{kind} needs at least one condition")
            children = tuple(self.node(item, (*path, kind, i), depth + 1) for i, item in enumerate(items))
            return AllOf(children) if kind == "all" else AnyOf(children)
        if kind == "not":
            _check_keys(node, ("not",), path, "a 'not' node")
            return Not(self.node(node["not"], (*path, "not"), depth + 1))
        if kind == "in_segment":
            _check_keys(node, ("in_segment",), path, "an 'in_segment' node")
            key = _string(node["in_segment"], (*path, "in_segment"), "in_segment")
            if not KEY_RE.match(key):
                _fail((*path, "in_segment"), f"{key!r} is not a segment key (lower-case letters, digits, _ . -)")
            return InSegment(key)
        if kind == "trait":
            _check_keys(node, ("trait", "op", "value"), path, "a trait condition")
            tpath = _path_of(node["trait"], (*path, "trait"), "trait")
            op, val = _op_value(node, path, "a trait condition")
            return TraitCondition(node["trait"], tpath, op, val)
        return self.event(node, path)

    def event(self, node: Mapping[str, Any], path: tuple[str | int, ...]) -> EventCondition:
        _check_keys(node, _EVENT_KEYS, path, "an event condition")
        name = _string(node["event"], (*path, "event"), "event")
        where: list[PropertyCondition] = []
        if "where" in node:
            items = node["where"]
            if not isinstance(items, list | tuple):
                _fail((*path, "where"), f"where needs a list of property conditions, not {json_type_name(items)}")
            for i, item in enumerate(items):
                ipath = (*path, "where", i)
                cond = _object(item, ipath, "a property condition")
                _check_keys(cond, ("property", "op", "value"), ipath, "a property condition")
                raw = _required(cond, "property", ipath, "a property condition")
                ppath = _path_of(raw, (*ipath, "property"), "property")
                op, val = _op_value(cond, ipath, "a property condition")
                where.append(PropertyCondition(raw, ppath, op, val))
        within: str | None = None
        between: tuple[str, str] | None = None
        if "within" in node and "between" in node:
            _fail((*path, "between"), "an event condition has one window: use either within or between, not both")
        if "within" in node:
            within = _window(node["within"], (*path, "within"))
        if "between" in node:
            raw_between = node["between"]
            bpath = (*path, "between")
            if not isinstance(raw_between, list | tuple) or len(raw_between) != 2:
                shown = (
                    f"{len(raw_between)} values"
                    if isinstance(raw_between, list | tuple)
                    else json_type_name(raw_between)
                )
                _fail(bpath, f"between needs [from, to] (two ISO dates or date-times), not {shown}")
            start = _instant(raw_between[0], (*bpath, 0))
            end = _instant(raw_between[1], (*bpath, 1))
            start_us, end_us = as_instant(start), as_instant(end)
            assert start_us is not None and end_us is not None
            if start_us >= end_us:
                _fail(bpath, f"between needs [from, to) with from before to; {start!r} is not before {end!r}")
            between = (start, end)
        thresholds = tuple(
            _threshold_of(measure, node[measure], (*path, measure))
            for measure in ("count", *AGGREGATES)
            if measure in node
        )
        return EventCondition(name, tuple(where), within, between, thresholds)


def validate_rule(rule: object, path: tuple[str | int, ...] = ("rule",)) -> Rule:
    """Validate a rule tree alone (paths start at ``/rule``)."""
    return _Walker().node(rule, path, 1)


def _schedule(value: object) -> Schedule | None:
    if value is None:
        return None
    path: tuple[str | int, ...] = ("schedule",)
    node = _object(value, path, "schedule")
    _check_keys(node, ("every", "cron"), path, "schedule")
    if ("every" in node) == ("cron" in node):
        _fail(path, 'schedule is either {"every": "15m"} or {"cron": "0 * * * *"}')
    if "every" in node:
        return Schedule(every=_window(node["every"], (*path, "every")))
    cron = _string(node["cron"], (*path, "cron"), "cron")
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron, timezone="UTC")
    except (ValueError, TypeError, KeyError) as exc:
        _fail((*path, "cron"), f"{cron!r} is not a five-field crontab ('minute hour day month weekday'): {exc}")
    return Schedule(cron=cron)


def _consent(value: object) -> None:
    """``consent``: a list of category names members must have granted."""
    if value is None:
        return
    if not isinstance(value, list) or len(value) > 20:
        _fail(("consent",), 'consent must be a list of at most 20 category names, e.g. ["marketing"]')
    for i, category in enumerate(value):
        if not isinstance(category, str) or not 1 <= len(category) <= 100:
            _fail(("consent", i), 'a consent category is a name of 1-100 characters, e.g. "marketing"')


def validate(definition: Mapping[str, Any]) -> Definition:
    """Parse and check a segment definition; raises InvalidSegment naming the JSON-pointer path at fault."""
    top = _object(definition, (), "a segment definition")
    huge = out_of_range(top)
    if huge is not None:
        _fail(huge[0], f"{huge[1]} is outside the 64-bit integer range; use a smaller number (or a float)")
    _check_keys(top, _TOP_KEYS, (), "a segment definition")
    key = _string(_required(top, "key", (), "a segment definition"), ("key",), "key")
    if not KEY_RE.match(key):
        _fail(("key",), f"{key!r} is not a valid key: 1-64 characters, lower-case letters, digits, _ . - (e.g. 'vip')")
    name = _string(_required(top, "name", (), "a segment definition"), ("name",), "name")
    if len(name) > 200:
        _fail(("name",), "name is longer than 200 characters")
    description = top.get("description")
    if description is not None:
        description = _string(description, ("description",), "description", nonempty=False)
        if len(description) > 2000:
            _fail(("description",), "description is longer than 2000 characters")
    schedule = _schedule(top.get("schedule"))
    _consent(top.get("consent"))
    kind = top.get("type", "rule")
    if not isinstance(kind, str) or kind not in SEGMENT_TYPES:
        _fail(("type",), f"unknown type {kind!r}; {_suggest(str(kind), SEGMENT_TYPES)}")
    if kind == "rule":
        for extra in ("model", "select"):
            if extra in top:
                _fail((extra,), f"{extra} belongs to cluster and propensity segments; a rule-based segment has a rule")
        if "rule" not in top:
            _fail(("rule",), "a rule-based segment needs a rule (or set type to cluster or propensity with a model)")
        return Definition(key, name, description, schedule, validate_rule(top["rule"]), "rule")
    if "rule" in top:
        _fail(("rule",), f"a {kind} segment is defined by its model, not a rule; remove 'rule'")
    model = dict(_object(_required(top, "model", (), f"a {kind} segment"), ("model",), "model"))
    select = None
    if top.get("select") is not None:
        select = dict(_object(top["select"], ("select",), "select"))
    return Definition(key, name, description, schedule, None, kind, model, select)
