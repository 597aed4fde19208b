"""Webhook errors, named after the situation (all under :class:`cdp.errors.CDPError`)."""

from __future__ import annotations

from cdp.errors import CDPError, InvalidInput, NotFound


class UnknownWebhook(NotFound):
    code = "unknown_webhook"


class UnknownMessage(NotFound):
    code = "unknown_message"


class UnsafeURL(InvalidInput):
    """Not http(s), or a host on a private, loopback or link-local address."""

    code = "unsafe_url"


class SecretKeyUnavailable(CDPError):
    """The key that encrypts stored signing secrets is missing or is not the one they were encrypted with."""

    code = "secret_key_unavailable"
    status = 500
