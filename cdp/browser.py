"""Settings documents for the browser SDKs, so they work with only their documented host option.

Segment's analytics.js (``@segment/analytics-next``) given ``cdnURL`` asks
``{cdnURL}/v1/projects/{writeKey}/settings`` and sends events to ``{protocol}://{apiHost}/{t|i|p|...}``
as its ``integrations["Segment.io"]`` block says. RudderStack's v3 SDK (``@rudderstack/analytics-js``)
given ``configUrl`` asks ``{configUrl}/sourceConfig/?writeKey=...`` and needs a ``source`` with an ``id``,
a ``config`` object and a ``destinations`` list; it sends events to the ``dataPlaneUrl`` of its ``load``.

Write keys are public in a browser, so these documents say nothing a page does not already hold.
"""

from __future__ import annotations

from typing import Any

from cdp.errors import UnknownWriteKey
from cdp.keys import KeyInfo, Keys


class BrowserSDKs:
    """``cdp.browser``: what Segment's and RudderStack's browser SDKs load before they send."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def _write_key(self, write_key: str) -> KeyInfo:
        info = self.keys.lookup(write_key) if write_key else None
        if info is None or info.kind != "write":
            raise UnknownWriteKey(
                "no active write key has this value; create one with `cdp keys create --kind write`",
                {"write_key_prefix": write_key[:6]},
            )
        return info

    def segment_settings(self, write_key: str, *, api_host: str, protocol: str) -> dict[str, Any]:
        """The analytics.js settings document: send to ``{protocol}://{api_host}`` (``host:port/v1``).

        No destinations and no remote plugins (the SDK then loads no further code), remote metrics off
        (they would go to Segment), every event type enabled.
        """
        self._write_key(write_key)
        return {
            "integrations": {
                "Segment.io": {
                    "apiKey": write_key,
                    "apiHost": api_host,
                    "protocol": protocol,
                    "unbundledIntegrations": [],
                    "addBundledMetadata": True,
                    "maybeBundledConfigIds": {},
                    "versionSettings": {"componentTypes": ["browser"]},
                }
            },
            "plan": {
                "track": {"__default": {"enabled": True, "integrations": {}}},
                "identify": {"__default": {"enabled": True}},
                "group": {"__default": {"enabled": True}},
            },
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0, "host": api_host},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }

    def rudderstack_config(self, write_key: str) -> dict[str, Any]:
        """The RudderStack v3 source configuration: an enabled source with no device-mode destinations
        and the SDK's own error and metrics reporting (to RudderStack) off."""
        info = self._write_key(write_key)
        return {
            "isHosted": False,
            "source": {
                "id": info.id,
                "name": info.name,
                "writeKey": write_key,
                "workspaceId": "cdp",
                "enabled": True,
                "deleted": False,
                "createdAt": info.created_at,
                "updatedAt": info.created_at,
                "sourceDefinition": {"id": "cdp-javascript", "name": "Javascript", "category": None},
                "config": {
                    "statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}},
                },
                "destinations": [],
            },
        }
