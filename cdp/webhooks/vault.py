"""Signing secrets at rest: AES-256-GCM under a key that is not in the database.

The key is ``settings.secret_key`` (``CDP_SECRET_KEY``, stretched with HKDF) or, without it, 32 random
bytes in a key file next to the database (``<db>.secret-key``, created 0600 on first use). Each
ciphertext is bound to its endpoint id (associated data), so a leaked row, or a row copied onto
another endpoint, cannot be used to sign.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cdp.errors import SecretKeyUnavailable
from cdp.settings import Settings

_VERSION = "v1"
_INFO = b"cdp webhook signing secrets"


def key_file_path(settings: Settings) -> Path | None:
    """Where the key file lives (None for an in-memory database: the key lives as long as the process)."""
    if settings.secret_key_file is not None:
        return settings.secret_key_file
    if str(settings.db) == ":memory:":
        return None
    return Path(f"{settings.db}.secret-key")


def _derive(material: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material)


def _read(path: Path) -> bytes:
    deadline = time.monotonic() + 2
    while True:  # another process may be writing it right now
        text = path.read_text(encoding="ascii").strip()
        if text or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SecretKeyUnavailable(f"the key file {path} must hold 32 base64-encoded bytes; restore it from a backup")
    return raw


def _read_or_create(path: Path) -> bytes:
    """The key file's key, creating the file (0600, exclusively) when it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    raw = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(raw).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return raw


class Vault:
    """Encrypts and decrypts signing secrets; the key is loaded (or made) on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._aead: AESGCM | None = None
        self._lock = threading.Lock()

    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is None:
                if self.settings.secret_key is not None:
                    key = _derive(self.settings.secret_key.get_secret_value().encode())
                else:
                    path = key_file_path(self.settings)
                    key = _derive(_read_or_create(path) if path is not None else secrets.token_bytes(32))
                self._aead = AESGCM(key)
            return self._aead

    def encrypt(self, plaintext: str, owner: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._cipher().encrypt(nonce, plaintext.encode(), owner.encode())
        return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, owner: str) -> str:
        version, _, data = token.partition(":")
        if version != _VERSION:
            raise SecretKeyUnavailable(f"stored secret of {owner} has an unknown format {version!r}")
        raw = base64.b64decode(data)
        try:
            return self._cipher().decrypt(raw[:12], raw[12:], owner.encode()).decode()
        except InvalidTag as exc:
            where = "CDP_SECRET_KEY" if self.settings.secret_key is not None else str(key_file_path(self.settings))
            raise SecretKeyUnavailable(
                f"cannot decrypt the signing secret of {owner}: {where} is not the key it was stored with; "
                "restore that key, or rotate the endpoint's secret",
                {"webhook_id": owner},
            ) from exc
