"""Features per profile: the one module every model reads its inputs from.

A model asks for features by group or by name (``FeatureSpec.resolve``):

- ``rfm``: ``recency_days`` (days since the last order, capped), ``frequency`` (orders), ``monetary``
  (order revenue);
- ``engagement``: events in the last 7, 30 and 90 days, active days and sessions in the last 30 days,
  the average session length (a session ends after 30 minutes without an event), days since last seen;
- ``events``: per event name (the most frequent ones), counts in weekly roll-ups (last 1, 4 and 13 weeks);
- ``traits``: the profile's own traits that are not identifiers: numbers as they are, booleans as 0/1,
  dates as days since, categories pivoted to one boolean per frequent value;
- by name: any of the above (``recency_days``), ``event:<name>:<window>`` (``event:Product Viewed:2w``),
  ``trait:<path>`` or ``trait:<path>=<value>``.

Every feature is computed "as of" an instant from events strictly before it, so a propensity model can
build past snapshots without seeing the future. The same SQL runs in DuckDB over the whole store (in the
segment worker process) or, in this process, over one profile's rows for real-time assignment, so a
profile gets the same numbers either way. Counts and money are ``log1p``-transformed (heavy tails).
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import orjson

from cdp.chunks import chunked, marks
from cdp.errors import InvalidModel, NotEnoughData
from cdp.timeutil import format_ts, parse_duration, parse_ts

ORDER_EVENT = "Order Completed"
# The ``events`` relation the feature SQL reads: the store's events with the order revenue pulled out of the
# properties (so the whole-store copy need not hold every event's JSON).
EVENTS_SQL = (
    "SELECT profile_id, type, event, timestamp,"
    " CASE WHEN type = 'track' AND event = '{order}'"
    " THEN TRY_CAST(json_extract_string(properties, '/revenue') AS DOUBLE) END AS revenue"
    " FROM {source} WHERE profile_id IS NOT NULL"
)
CAP_DAYS = 365.0
SESSION_GAP_MS = 30 * 60 * 1000
GROUPS = ("rfm", "engagement", "events", "traits")
EVENT_WINDOWS = ("1w", "4w", "13w")
TOP_EVENTS = 12
TOP_CATEGORIES = 8
# Traits that identify a person or are free text: never features.
IDENTITY_TRAITS = frozenset(
    {
        "email", "phone", "first_name", "last_name", "name", "firstName", "lastName", "birthday", "address",
        "company", "title", "user_id", "userId", "anonymous_id", "id", "external_id", "username", "avatar",
        "website", "description", "persona", "persona_confidence",
    }
)  # fmt: skip
_WINDOW_RE = re.compile(r"^[1-9][0-9]{0,4}[hdw]$")


@dataclass(frozen=True)
class Feature:
    """One column of the feature matrix.

    ``kind``: ``base`` (a named aggregate), ``event`` (count of ``event`` in ``window``), ``trait_number``,
    ``trait_bool``, ``trait_date`` (days since) or ``trait_value`` (1 when the trait equals ``value``).
    """

    name: str
    kind: str
    event: str | None = None
    window: str | None = None
    path: str | None = None
    value: str | None = None
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Feature:
        return Feature(**data)

    def describe(self) -> str:
        """Words for people: what the number counts."""
        if self.kind == "base":
            return BASE[self.name].description
        if self.kind == "event":
            return f"{self.event} events in the last {self.window}"
        if self.kind == "trait_value":
            return f"trait {self.path} = {self.value}"
        if self.kind == "trait_date":
            return f"days since trait {self.path}"
        return f"trait {self.path}"

    def adjectives(self) -> tuple[str, str]:
        """How to call a group that has much (first) or little (second) of this feature."""
        if self.kind == "base":
            base = BASE[self.name]
            return base.high, base.low
        if self.kind == "event":
            return f"many {self.event} ({self.window})", f"few {self.event} ({self.window})"
        if self.kind == "trait_value":
            return f"{self.path}={self.value}", f"not {self.path}={self.value}"
        if self.kind == "trait_date":
            return f"old {self.path}", f"recent {self.path}"
        if self.kind == "trait_bool":
            return f"{self.path}", f"not {self.path}"
        return f"high {self.path}", f"low {self.path}"


@dataclass(frozen=True)
class _Base:
    group: str
    description: str
    high: str
    low: str
    log: bool


BASE: dict[str, _Base] = {
    "recency_days": _Base("rfm", "days since the last order (capped at 365)", "lapsed", "recent buyers", False),
    "frequency": _Base("rfm", "orders", "frequent buyers", "rarely buy", True),
    "monetary": _Base("rfm", "order revenue", "high spend", "low spend", True),
    "events_7d": _Base("engagement", "events in the last 7 days", "active this week", "quiet this week", True),
    "events_30d": _Base("engagement", "events in the last 30 days", "very active", "inactive", True),
    "events_90d": _Base("engagement", "events in the last 90 days", "long-time active", "little history", True),
    "active_days_30d": _Base("engagement", "active days in the last 30 days", "daily visitors", "rare visitors", False),
    "sessions_30d": _Base("engagement", "sessions in the last 30 days", "many sessions", "few sessions", True),
    "avg_session_minutes_30d": _Base(
        "engagement", "average session length in minutes (last 30 days)", "long sessions", "short sessions", True
    ),
    "days_since_last_seen": _Base(
        "engagement", "days since the last event (capped at 365)", "dormant", "seen lately", False
    ),
}


@dataclass
class FeatureSpec:
    """The resolved, ordered features of a model (stored with it)."""

    features: list[Feature] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.features]

    @staticmethod
    def from_json(data: Iterable[Mapping[str, Any]]) -> FeatureSpec:
        return FeatureSpec([Feature.from_json(d) for d in data])


def check_requested(requested: Sequence[Any], path: str = "/model/features") -> list[str]:
    """Validate the ``features`` list of a model definition (names and shapes, not data)."""
    if not isinstance(requested, list) or not requested:
        raise InvalidModel(
            "features must be a non-empty list of feature groups or names",
            {"path": path, "groups": list(GROUPS), "names": sorted(BASE)},
        )
    out = []
    for i, item in enumerate(requested):
        where = f"{path}/{i}"
        if not isinstance(item, str) or not item:
            raise InvalidModel("each feature must be a non-empty string", {"path": where})
        if item in GROUPS or item in BASE:
            out.append(item)
            continue
        if item.startswith("event:"):
            name, _, window = item[len("event:") :].rpartition(":")
            if not name or not _WINDOW_RE.match(window):
                raise InvalidModel(
                    f"feature {item!r} must look like event:<event name>:<window>, the window a number and"
                    " h, d or w (event:Product Viewed:2w)",
                    {"path": where},
                )
            out.append(item)
            continue
        if item.startswith("trait:") and len(item) > len("trait:"):
            out.append(item)
            continue
        raise InvalidModel(
            f"unknown feature {item!r}; use a group ({', '.join(GROUPS)}), a name ({', '.join(sorted(BASE))}),"
            " event:<event name>:<window> or trait:<path>",
            {"path": where, "groups": list(GROUPS), "names": sorted(BASE)},
        )
    return out


def events_sql(source: str) -> str:
    return EVENTS_SQL.format(order=ORDER_EVENT.replace("'", "''"), source=source)


def window_ms(window: str) -> int:
    return int(parse_duration(window).total_seconds() * 1000)


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def pointer(path: str) -> str:
    """A dotted trait path as a JSON pointer (what DuckDB's JSON functions take as a bound parameter)."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path.split("."))


class Query(Protocol):
    """What runs the feature SQL: the segment worker (whole store) or an in-process DuckDB (a few profiles)."""

    def numpy(self, sql: str, params: list[Any]) -> dict[str, Any]: ...


# -- resolving requested features against the data --------------------------------------------------------


def resolve(requested: Sequence[str], query: Query, as_of: datetime) -> FeatureSpec:
    """Expand groups into concrete features, looking at the data where a group depends on it."""
    chosen: list[Feature] = []
    seen: set[str] = set()

    def add(feature: Feature) -> None:
        if feature.name not in seen:
            seen.add(feature.name)
            chosen.append(feature)

    for item in check_requested(list(requested)):
        if item in GROUPS and item in ("rfm", "engagement"):
            for name, base in BASE.items():
                if base.group == item:
                    add(Feature(name, "base", log=base.log))
        elif item in BASE:
            add(Feature(item, "base", log=BASE[item].log))
        elif item == "events":
            for event in _top_events(query, as_of):
                for window in EVENT_WINDOWS:
                    add(Feature(f"event:{event}:{window}", "event", event=event, window=window, log=True))
        elif item.startswith("event:"):
            event, _, window = item[len("event:") :].rpartition(":")
            add(Feature(item, "event", event=event, window=window, log=True))
        elif item == "traits":
            for feature in _trait_features(query, None):
                add(feature)
        else:
            path, _, value = item[len("trait:") :].partition("=")
            if value:
                add(Feature(item, "trait_value", path=path, value=value))
            else:
                for feature in _trait_features(query, path):
                    add(feature)
    if not chosen:
        raise NotEnoughData(
            "none of the requested features exists in the data yet (no events or traits to build them from)",
            {"path": "/model/features", "requested": list(requested)},
        )
    return FeatureSpec(chosen)


def _top_events(query: Query, as_of: datetime) -> list[str]:
    found = query.numpy(
        "SELECT event, count(*) AS n FROM events WHERE event IS NOT NULL AND type IN ('track', 'page', 'screen')"
        " AND timestamp < $1 GROUP BY event ORDER BY n DESC, event LIMIT $2",
        [format_ts(as_of), TOP_EVENTS],
    )
    return [str(e) for e in found["event"]]


def _trait_features(query: Query, only: str | None) -> list[Feature]:
    """Classify traits from a sample of profiles: numbers, booleans, dates, or categories (one-hot)."""
    sample = query.numpy("SELECT traits FROM profiles USING SAMPLE 5000 ROWS", [])
    values: dict[str, list[Any]] = {}
    total = 0
    for text in sample["traits"]:
        total += 1
        traits = orjson.loads(text) if text else {}
        for path, value in _flatten(traits):
            if only is None and (path.split(".")[0] in IDENTITY_TRAITS or path.split(".")[0].startswith("$")):
                continue
            if only is not None and path != only:
                continue
            values.setdefault(path, []).append(value)
    out: list[Feature] = []
    for path in sorted(values):
        seen = values[path]
        if only is None and len(seen) < max(1, 0.05 * total):
            continue  # too rare to describe a group
        if all(isinstance(v, bool) for v in seen):
            out.append(Feature(f"trait:{path}", "trait_bool", path=path))
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen):
            out.append(Feature(f"trait:{path}", "trait_number", path=path))
        elif all(isinstance(v, str) and len(v) >= 10 and parse_ts(v) is not None for v in seen):
            out.append(Feature(f"trait:{path}", "trait_date", path=path))
        else:
            counts = Counter(str(v).lower() if isinstance(v, bool) else str(v) for v in seen)
            distinct = len(counts)
            if only is None and distinct > 50:
                continue  # free text, not a category
            for value, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]:
                out.append(Feature(f"trait:{path}={value}", "trait_value", path=path, value=value))
    if only is not None and not out:
        raise NotEnoughData(
            f"no profile has trait {only!r} (looked at a sample of {total}); check the path",
            {"path": "/model/features", "trait": only},
        )
    return out


def _flatten(traits: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in traits.items():
        if "." in key:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, path + ".")
        elif value is not None and not isinstance(value, list):
            yield path, value


# -- computing the matrix ----------------------------------------------------------------------------------


def feature_sql(
    spec: FeatureSpec, as_of: datetime, *, population: str = "all", only_ids: bool = False
) -> tuple[str, list[Any]]:
    """SQL over ``events`` and ``profiles`` answering ``id`` and one column per feature (``f0``, ``f1``, ...).

    ``population``: ``all`` live profiles, or ``seen`` (those with an event before ``as_of``, for training
    snapshots).
    """
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    at_ms = epoch_ms(as_of)
    at = bind(format_ts(as_of))
    order = bind(ORDER_EVENT)
    cap = bind(CAP_DAYS)
    day = 86_400_000.0

    def since(ms: int) -> str:
        return bind(format_ts(as_of - timedelta(milliseconds=ms)))

    aggregates: dict[str, str] = {
        "last_order_ms": f"max(ms) FILTER (WHERE type = 'track' AND event = {order})",
        "frequency": f"count(*) FILTER (WHERE type = 'track' AND event = {order})",
        "monetary": f"coalesce(sum(revenue) FILTER (WHERE type = 'track' AND event = {order}), 0)",
        "events_7d": f"count(*) FILTER (WHERE timestamp >= {since(7 * 86_400_000)})",
        "events_30d": f"count(*) FILTER (WHERE timestamp >= {since(30 * 86_400_000)})",
        "events_90d": f"count(*) FILTER (WHERE timestamp >= {since(90 * 86_400_000)})",
        "active_days_30d": f"count(DISTINCT left(timestamp, 10)) FILTER (WHERE timestamp >= {since(30 * 86_400_000)})",
        "last_ms": "max(ms)",
    }
    columns: list[str] = []
    needs_sessions = False
    for i, feature in enumerate(spec.features):
        col = f"f{i}"
        if feature.kind == "base":
            name = feature.name
            if name == "recency_days":
                expr = f"coalesce(least(({bind(at_ms)} - a.last_order_ms) / {day}, {cap}), {cap})"
            elif name == "days_since_last_seen":
                expr = f"coalesce(least(({bind(at_ms)} - a.last_ms) / {day}, {cap}), {cap})"
            elif name in ("sessions_30d", "avg_session_minutes_30d"):
                needs_sessions = True
                expr = f"coalesce(s.{name}, 0)"
            else:
                expr = f"coalesce(a.{name}, 0)"
        elif feature.kind == "event":
            assert feature.event is not None and feature.window is not None
            agg = f"e{i}"
            aggregates[agg] = (
                f"count(*) FILTER (WHERE event = {bind(feature.event)} AND type IN ('track', 'page', 'screen')"
                f" AND timestamp >= {since(window_ms(feature.window))})"
            )
            expr = f"coalesce(a.{agg}, 0)"
        else:
            assert feature.path is not None
            raw = f"json_extract(p.traits, {bind(pointer(feature.path))})"
            text = f"json_extract_string(p.traits, {bind(pointer(feature.path))})"
            if feature.kind == "trait_number":
                expr = f"coalesce(TRY_CAST({text} AS DOUBLE), 0)"
            elif feature.kind == "trait_bool":
                expr = f"CASE WHEN json_type({raw}) = 'BOOLEAN' AND {text} = 'true' THEN 1.0 ELSE 0.0 END"
            elif feature.kind == "trait_date":
                when = f"epoch_ms(TRY_CAST(left({text}, 19) AS TIMESTAMP))"
                expr = f"coalesce(least(greatest(({bind(at_ms)} - {when}) / {day}, 0), 3650), 0)"
            else:
                expr = f"CASE WHEN {text} = {bind(feature.value)} THEN 1.0 ELSE 0.0 END"
        columns.append(f"CAST({expr} AS DOUBLE) AS {col}")
    agg_sql = ",\n           ".join(f"{expr} AS {name}" for name, expr in aggregates.items())
    sessions = ""
    if needs_sessions:
        lo = since(30 * 86_400_000)
        # One pass: a gap of more than 30 minutes (or the first event) starts a session; a session lasts the sum
        # of the gaps inside it, so the average length is the sum of the short gaps over the number of sessions.
        sessions = f""",
    gaps AS (SELECT profile_id, ms - lag(ms) OVER (PARTITION BY profile_id ORDER BY ms) AS gap
             FROM ev WHERE timestamp >= {lo}),
    s AS (SELECT profile_id, count(*) FILTER (WHERE gap IS NULL OR gap > {SESSION_GAP_MS}) AS sessions_30d,
                 coalesce(sum(gap) FILTER (WHERE gap <= {SESSION_GAP_MS}), 0) / 60000.0
                   / count(*) FILTER (WHERE gap IS NULL OR gap > {SESSION_GAP_MS}) AS avg_session_minutes_30d
          FROM gaps GROUP BY profile_id)"""
    join_sessions = "LEFT JOIN s ON s.profile_id = p.id" if needs_sessions else ""
    where = "WHERE a.profile_id IS NOT NULL" if population == "seen" else ""
    select = "p.id" if only_ids else ", ".join(["p.id", *columns])
    sql = f"""
WITH ev AS (SELECT profile_id, type, event, timestamp, revenue,
                   epoch_ms(CAST(left(timestamp, 23) AS TIMESTAMP)) AS ms
            FROM events WHERE timestamp < {at}),
     a AS (SELECT profile_id,
           {agg_sql}
           FROM ev GROUP BY profile_id){sessions}
SELECT {select}
FROM profiles p LEFT JOIN a ON a.profile_id = p.id {join_sessions}
{where}
ORDER BY p.id"""
    return _renumber(sql, params)


_PARAM = re.compile(r"\$(\d+)\b")


def _renumber(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """Drop the bound values the SQL does not use (DuckDB refuses extra parameters) and number the rest 1..n."""
    used: dict[int, int] = {}
    for match in _PARAM.finditer(sql):
        used.setdefault(int(match.group(1)), len(used) + 1)
    text = _PARAM.sub(lambda m: f"${used[int(m.group(1))]}", sql)
    return text, [params[old - 1] for old, _ in sorted(used.items(), key=lambda kv: kv[1])]


@dataclass
class Matrix:
    ids: np.ndarray[Any, Any]  # profile ids (object array of str)
    X: np.ndarray[Any, Any]  # float64, one row per id, columns in the spec's order (log1p applied)


def build(query: Query, spec: FeatureSpec, as_of: datetime, *, population: str = "all") -> Matrix:
    sql, params = feature_sql(spec, as_of, population=population)
    found = query.numpy(sql, params)
    ids = np.asarray(found["id"], dtype=object)
    n = len(ids)
    X = np.zeros((n, len(spec.features)), dtype=np.float64)
    for i, feature in enumerate(spec.features):
        column = np.ma.filled(np.ma.asarray(found[f"f{i}"], dtype=np.float64), 0.0)
        if feature.log:
            column = np.log1p(np.maximum(column, 0.0))
        X[:, i] = column
    return Matrix(ids, X)


def label_sql(event: str, start: datetime, end: datetime) -> tuple[str, list[Any]]:
    """Profiles that did ``event`` in ``[start, end)``."""
    return (
        "SELECT DISTINCT profile_id AS id FROM events WHERE type = 'track' AND event = $1"
        " AND timestamp >= $2 AND timestamp < $3",
        [event, format_ts(start), format_ts(end)],
    )


# -- a few profiles, in this process -----------------------------------------------------------------------


class LocalQuery:
    """Feature SQL over just some profiles' rows, copied from SQLite into an in-process DuckDB.

    (No SQLite scanner is loaded in this process: see ``cdp.duckdb_worker``.)
    """

    def __init__(self, conn: sqlite3.Connection, profile_ids: Sequence[str]) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.execute(
            "CREATE TABLE raw_events (profile_id VARCHAR, type VARCHAR, event VARCHAR, timestamp VARCHAR,"
            " properties VARCHAR)"
        )
        self.con.execute("CREATE TABLE profiles (id VARCHAR, traits VARCHAR)")
        ids = list(profile_ids)
        for part in chunked(ids):
            events = conn.execute(
                "SELECT profile_id, type, event, timestamp, properties FROM events"
                f" WHERE profile_id IN ({marks(part)})",
                part,
            ).fetchall()
            if events:
                self.con.executemany("INSERT INTO raw_events VALUES (?, ?, ?, ?, ?)", events)
            profiles = conn.execute(
                f"SELECT id, traits FROM profiles WHERE id IN ({marks(part)}) AND merged_into IS NULL", part
            ).fetchall()
            if profiles:
                self.con.executemany("INSERT INTO profiles VALUES (?, ?)", profiles)
        self.con.execute("CREATE VIEW events AS " + events_sql("raw_events"))

    def numpy(self, sql: str, params: list[Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.con.execute(sql, params).fetchnumpy()
        return result

    def close(self) -> None:
        self.con.close()
