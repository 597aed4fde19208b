"""Admin and read endpoints take a JSON body whatever its Content-Type, when it parses as JSON.

``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; the tracking paths never cared (Segment's
API does not), and users expect the same of ``POST /v1/webhooks`` and ``/v1/segments``. A body that is not
JSON passes through untouched, so a form stays a form and the error names the Content-Type it saw.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BYTES = 1 << 20  # admin bodies are small; larger ones pass through as sent
METHODS = frozenset({"POST", "PUT", "PATCH"})


class JSONBodies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The guard (outside this) hands over the route's policy: routes that read their body raw (tracking,
        # records: ``guard.rule(raw=True)``) get it untouched.
        policy = scope.get("cdp.policy")
        if scope["type"] != "http" or scope["method"] not in METHODS or (policy is not None and policy.raw):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        kind = next((v for k, v in headers if k == b"content-type"), b"").lower()
        if b"json" in kind or kind.startswith(b"multipart/"):
            await self.app(scope, receive, send)
            return
        body, more = await read_body(receive, MAX_BYTES)
        if not more and body.strip():
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
            else:
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))
        await self.app(scope, replaying(receive, body, more_body=more), send)


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, read until it ends or is longer than ``limit`` bytes (the chunk that passes the limit
    included); and whether more of it is still to come."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > limit:
            break
    return b"".join(chunks), more


def replaying(receive: Receive, body: bytes, *, more_body: bool = False) -> Receive:
    """A ``receive`` that first hands the app the body a middleware already read, then the rest of the stream."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more_body}
        return await receive()

    return replay
