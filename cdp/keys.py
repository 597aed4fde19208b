"""Write keys (ingest only) and API tokens (``read``, ``admin``), stored as SHA-256 hashes.

Secrets are long random strings, so a plain SHA-256 is enough to make a leaked row useless for
authentication while keeping verification to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Literal

from cdp.errors import Forbidden, InvalidInput, Unauthorized, UnknownKey
from cdp.store import Store
from cdp.timeutil import now_iso

KeyKind = Literal["write", "read", "admin"]
KINDS: tuple[KeyKind, ...] = ("write", "read", "admin")
_PREFIX = {"write": "wk_", "read": "rk_", "admin": "ak_"}
_LAST_USED_EVERY = 60.0


@dataclass(frozen=True)
class KeyInfo:
    id: str
    kind: KeyKind
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: KeyKind) -> bool:
        """A write key only ingests; admin implies read."""
        if scope == "write":
            return self.kind in ("write", "admin")
        if scope == "read":
            return self.kind in ("read", "admin")
        return self.kind == "admin"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


_COLUMNS = "id, kind, name, prefix, created_at, last_used_at, revoked_at"


def _info(row: tuple[object, ...]) -> KeyInfo:
    return KeyInfo(*row)  # type: ignore[arg-type]


class Keys:
    def __init__(self, store: Store, cache_seconds: float = 5.0) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self, kind: str, name: str | None = None) -> tuple[KeyInfo, str]:
        """A new key; the secret is returned here once and never again."""
        if kind not in KINDS:
            raise InvalidInput(f"key kind must be one of {', '.join(KINDS)}, not {kind!r}", {"field": "kind"})
        name = (name or "default").strip() or "default"
        secret = _PREFIX[kind] + secrets.token_urlsafe(24)
        info = KeyInfo(
            id="key_" + secrets.token_hex(6),
            kind=kind,
            name=name,
            prefix=secret[:8],
            created_at=now_iso(),
            last_used_at=None,
            revoked_at=None,
        )

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, kind, name, prefix, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (info.id, info.kind, info.name, info.prefix, _hash(secret), info.created_at),
            )

        self.store.write(insert)
        return info, secret

    def list(self, include_revoked: bool = True) -> list[KeyInfo]:
        sql = f"SELECT {_COLUMNS} FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [_info(row) for row in self.store.reader().execute(sql + " ORDER BY created_at, id")]

    def get(self, key_id: str) -> KeyInfo:
        row = self.store.reader().execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise UnknownKey(f"no key with id {key_id!r}; `cdp keys list` shows the ids", {"key_id": key_id})
        return _info(row)

    def revoke(self, key_id: str) -> KeyInfo:
        self.get(key_id)
        when = now_iso()
        self.store.write(
            lambda conn: conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (when, key_id)
            )
        )
        with self._lock:
            self._cache.clear()
        return self.get(key_id)

    def lookup(self, secret: str) -> KeyInfo | None:
        """The active key with this secret, or None (cached for ``cache_seconds``)."""
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        row = (
            self.store.reader()
            .execute(f"SELECT {_COLUMNS} FROM api_keys WHERE secret_hash = ?", (_hash(secret),))
            .fetchone()
        )
        info = _info(row) if row else None
        if info is not None and not info.active:
            info = None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = (now, info)
        return info

    def verify(self, secret: str | None, scope: KeyKind) -> KeyInfo:
        """The key for ``secret`` if it may act in ``scope``; Unauthorized / Forbidden otherwise."""
        if not secret:
            hint = (
                "send the write key as the HTTP Basic username (empty password) or as writeKey in the body"
                if scope == "write"
                else "send 'Authorization: Bearer <token>'"
            )
            raise Unauthorized(f"no key was sent: {hint}")
        info = self.lookup(secret)
        if info is None:
            raise Unauthorized("the key is unknown or revoked; create one with `cdp keys create`")
        if not info.allows(scope):
            raise Forbidden(
                f"a {info.kind} key cannot be used for {scope} calls",
                {"key_id": info.id, "kind": info.kind, "needed": scope},
            )
        self._touch(info)
        return info

    def _touch(self, info: KeyInfo) -> None:
        """Record last use at most once a minute per key, off the caller's path."""
        now = time.monotonic()
        if now - self._touched.get(info.id, -_LAST_USED_EVERY) < _LAST_USED_EVERY:
            return
        self._touched[info.id] = now
        when = now_iso()
        self.store.submit(
            lambda conn: conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (when, info.id))
        )
