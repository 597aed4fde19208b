"""One log line per request on the ``cdp.access`` logger: method, path, status, milliseconds.

The path only: no query string (``/sourceConfig/?writeKey=...`` carries a key), no headers, no body.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdp import clean_text

logger = logging.getLogger("cdp.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ms = (time.perf_counter() - start) * 1000
            # the path is the client's text: control and bidi characters are logged escaped
            logger.info("%s %s %d %.1fms", scope["method"], clean_text(scope["path"]), status, ms)
