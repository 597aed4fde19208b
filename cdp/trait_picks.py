"""Chosen traits of profiles, for destinations that need more than identifiers: the ``traits`` a webhook
subscription names (carried in its ``segment.entered``/``segment.exited`` payloads) and
``GET /v1/segments/{key}/members?traits=email,first_name``.

A name is a dotted path into the profile's unified traits (``email``, ``address.city``); names that are not
traits are looked up among what models wrote (``persona``, ``propensity_<key>``) and then the computed traits
(``order_count``). A profile without it answers null. At most ``MAX_TRAITS`` names; a value whose JSON is
longer than ``MAX_VALUE_BYTES`` is sent as null and its name listed in ``traits_truncated``, so a payload
stays well under the 20 KB webhook body limit. Light (SQLite and orjson): the ingest writer imports it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from cdp.chunks import chunked, marks
from cdp.errors import InvalidInput

MAX_TRAITS = 20
MAX_VALUE_BYTES = 512
_NAME = re.compile(r"^[A-Za-z0-9_$\-]+(\.[A-Za-z0-9_$\-]+)*$")


def check(value: object, field: str = "traits") -> list[str] | None:
    """A list of trait names (or a comma-separated string of them), validated; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidInput(
            f'{field} must be a non-empty list of trait names (e.g. ["email", "first_name"]), or null for none',
            {"field": field},
        )
    if len(value) > MAX_TRAITS:
        raise InvalidInput(f"{field} may name at most {MAX_TRAITS} traits, not {len(value)}", {"field": field})
    for i, name in enumerate(value):
        if not isinstance(name, str) or len(name) > 100 or not _NAME.match(name):
            raise InvalidInput(
                f"{field}[{i}] is {name!r}; a trait name is a dotted path of letters, digits, _ and - (address.city)",
                {"field": f"{field}[{i}]"},
            )
    return list(dict.fromkeys(value))


def _lookup(values: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def pick(conn: sqlite3.Connection, profile_ids: Iterable[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per profile: ``{"traits": {name: value or None}}`` plus ``traits_truncated`` when a value was too long."""
    ids = list(profile_ids)
    out: dict[str, dict[str, Any]] = {pid: {"traits": dict.fromkeys(names)} for pid in ids}
    if not names:
        return out
    for part in chunked(ids):
        for pid, traits, computed, scores in conn.execute(
            f"SELECT id, traits, computed, scores FROM profiles WHERE id IN ({marks(part)})", part
        ):
            sources = [orjson.loads(text or "{}") for text in (traits, scores, computed)]
            picked: dict[str, Any] = {}
            cut: list[str] = []
            for name in names:
                value = None
                for source in sources:
                    found, value = _lookup(source, name)
                    if found:
                        break
                if value is not None and len(orjson.dumps(value)) > MAX_VALUE_BYTES:
                    value = None
                    cut.append(name)
                picked[name] = value
            out[pid] = {"traits": picked, **({"traits_truncated": cut} if cut else {})}
    return out


def wanted_for_segment(conn: sqlite3.Connection, segment_key: str) -> list[str]:
    """The traits any enabled subscription to this segment's changes names (their union, in order)."""
    wanted: dict[str, None] = {}
    for traits, segments in conn.execute(
        "SELECT traits, segments FROM webhook_endpoints WHERE enabled = 1 AND traits IS NOT NULL"
    ):
        keys = orjson.loads(segments) if segments else None
        if keys is None or any(segment_key == k or segment_key.startswith(k + ".") for k in keys):
            wanted.update(dict.fromkeys(orjson.loads(traits)))
    return list(wanted)


def for_endpoint(data: str, names: Sequence[str] | None) -> str:
    """A stored payload as one subscription receives it: only the traits it named (none if it named none)."""
    if '"traits"' not in data:
        return data
    value = orjson.loads(data)
    profile = value.get("profile") if isinstance(value, dict) else None
    if not isinstance(profile, dict) or "traits" not in profile:
        return data
    keep = set(names or ())
    if keep:
        profile["traits"] = {k: v for k, v in profile["traits"].items() if k in keep}
        cut = [k for k in profile.get("traits_truncated", []) if k in keep]
        if cut:
            profile["traits_truncated"] = cut
        else:
            profile.pop("traits_truncated", None)
    else:
        profile.pop("traits", None)
        profile.pop("traits_truncated", None)
    return orjson.dumps(value).decode()
