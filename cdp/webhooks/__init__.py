"""``CDP.webhooks``: signed, retried notifications of segment and profile changes."""

from cdp.webhooks.service import Webhooks

__all__ = ["Webhooks"]
