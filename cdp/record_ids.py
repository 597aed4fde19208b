"""The identifier of a CRM record: ``<source>:<external_id>``, its key ``record:<source>:<external_id>``.

The first ``:`` always separates the source from the external id: ``%`` and ``:`` in the SOURCE are
percent-escaped (``%25``, ``%3A``); the external id is kept as it is. An ordinary source name (no ``:``, no
``%``) keeps the plain ``crm:123``; source ``crm:eu`` with id ``1`` is ``crm%3Aeu:1`` and source ``crm`` with
id ``eu:1`` is ``crm:eu:1``: two records, two identifiers. Every place that builds or reads a record
identifier (Python or SQL) goes through this module.
"""

from __future__ import annotations

import re

PREFIX = "record:"
_ESCAPED = re.compile(r"%(25|3[Aa])")


def encode_source(source: str) -> str:
    """The source as it is written in an identifier (``%`` and ``:`` escaped)."""
    return source.replace("%", "%25").replace(":", "%3A")


def decode_source(text: str) -> str:
    """The source an identifier's first part names (``%25`` and ``%3A``, either case, unescaped; any other
    ``%`` is kept as it is, so a hand-typed ``50%off`` still means ``50%off``)."""
    return _ESCAPED.sub(lambda m: "%" if m[1] == "25" else ":", text) if "%" in text else text


def value(source: str, external_id: str) -> str:
    """The identifier value of a CRM record (``identifiers.value`` where ``type = 'record'``)."""
    return f"{encode_source(source)}:{external_id}"


def key(source: str, external_id: str) -> str:
    """The identifier key of a CRM record (``record:<value>``), as match edges, labels, review items and
    link origins hold it."""
    return PREFIX + value(source, external_id)


def parse(text: str) -> tuple[str, str] | None:
    """``(source, external_id)`` of a record identifier value, or None when it has no ``:`` or an empty part."""
    source, sep, external_id = text.partition(":")
    if not (sep and source and external_id):
        return None
    return decode_source(source), external_id


def parse_key(text: str) -> tuple[str, str] | None:
    """``(source, external_id)`` of a record identifier key (``record:...``), or None for another key."""
    return parse(text[len(PREFIX) :]) if text.startswith(PREFIX) else None


def canonical(text: str) -> str | None:
    """A record identifier value as typed (``source:external_id``), written as stored; None if it is not one."""
    found = parse(text)
    return None if found is None else value(*found)


def legacy_value(source: str, external_id: str) -> str:
    """The value before migration 0012 (``<source>:<external_id>`` unescaped): only for salted hashes that
    cannot be rewritten (the suppression list)."""
    return f"{source}:{external_id}"


def sql_value(source: str = "source", external_id: str = "external_id") -> str:
    """The SQL expression of `value` over two columns (SQLite and DuckDB alike)."""
    return f"replace(replace({source}, '%', '%25'), ':', '%3A') || ':' || {external_id}"


def sql_key(source: str = "source", external_id: str = "external_id") -> str:
    """The SQL expression of `key` over two columns."""
    return f"'{PREFIX}' || {sql_value(source, external_id)}"


# The names the facade exports (``from cdp import record_key``) for the HTTP layer, which imports no module.
record_key = key
parse_record_key = parse_key
