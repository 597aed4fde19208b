"""Salted hashes of identifiers: what the privacy tables keep instead of the values.

A keyed BLAKE2b of ``"type:normalised value"`` under a random per-database salt (``privacy_state``): the same
identifier always hashes the same (so suppressions match and audits can be checked against a value someone
already holds), and a hash cannot be read back without the salt. SQLite only: the ingest writer process imports
this.
"""

from __future__ import annotations

import hashlib
import sqlite3

_salts: dict[str, bytes] = {}


def salt(conn: sqlite3.Connection) -> bytes:
    """This database's salt (made by migration 0008)."""
    path = _path(conn)
    cached = _salts.get(path)
    if cached is not None:
        return cached
    row = conn.execute("SELECT value FROM privacy_state WHERE key = 'salt'").fetchone()
    value = bytes.fromhex(row[0])
    _salts[path] = value
    return value


def identifier_hash(key: bytes, kind: str, value: str) -> str:
    return hashlib.blake2b(f"{kind}:{value}".encode(), key=key, digest_size=20).hexdigest()


def _path(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2])
