"""Webhook errors live in :mod:`cdp.errors` with the others; imported from here too (for one release)."""

from __future__ import annotations

from cdp.errors import SecretKeyUnavailable, UnknownMessage, UnknownWebhook, UnsafeURL

__all__ = ["SecretKeyUnavailable", "UnknownMessage", "UnknownWebhook", "UnsafeURL"]
