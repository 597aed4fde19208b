"""Segment's HTTP Tracking API: ``/v1/track|identify|page|screen|group|alias|batch`` and short paths."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from cdp.errors import PayloadTooLarge

from .. import guard
from ..deps import credential, get_cdp
from ..schemas import (
    ERRORS,
    WRITE_KEY_SECURITY,
    AliasMessage,
    BatchBody,
    GroupMessage,
    IdentifyMessage,
    PageMessage,
    Success,
    TrackMessage,
    body_doc,
)

router = APIRouter(tags=["tracking"])
SUCCESS = b'{"success":true}'
SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias", "b": "batch"}
DOCS: dict[str, type[BaseModel]] = {
    "track": TrackMessage,
    "identify": IdentifyMessage,
    "page": PageMessage,
    "screen": PageMessage,
    "group": GroupMessage,
    "alias": AliasMessage,
    "batch": BatchBody,
}
TRACKING_PATHS = frozenset(f"/v1/{p}" for p in [*DOCS, *SHORT])


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is larger than the {limit // 1024} KB allowed here", {"limit_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the body is larger than the {limit // 1024} KB allowed here", {"limit_bytes": limit}
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _route(kind: str) -> None:
    async def endpoint(request: Request) -> Response:
        # Not a CDPDep parameter: FastAPI runs a sync dependency on a worker thread, one more thread
        # round trip per request on the ingest path.
        cdp = get_cdp(request)
        settings = cdp.settings
        limit = settings.max_batch_bytes if kind == "batch" else settings.max_message_bytes
        body = await read_body(request, limit)
        # Validation on the event loop (CPU only, ~12 µs an event); the loop serves other requests
        # while the writer commits.
        await cdp.ingest.http_body_async(
            kind, body, content_encoding=request.headers.get("content-encoding"), write_key=credential(request)
        )
        return Response(SUCCESS, media_type="application/json")

    summary = f"Segment {kind}" if kind != "batch" else "Segment batch (up to 2,500 messages, 500 KB)"
    common = {
        "response_model": Success,
        "responses": ERRORS,
        "openapi_extra": {
            **body_doc(DOCS[kind]),
            "security": WRITE_KEY_SECURITY,
            **guard.rule(raw=True, max_body="max_batch_bytes" if kind == "batch" else "max_message_bytes"),
        },
    }
    router.add_api_route(f"/v1/{kind}", endpoint, methods=["POST"], summary=summary, **common)  # type: ignore[arg-type]
    short = next(s for s, k in SHORT.items() if k == kind)
    router.add_api_route(
        f"/v1/{short}",
        endpoint,
        methods=["POST"],
        summary=f"{summary} (analytics.js short path)",
        include_in_schema=True,
        operation_id=f"{kind}_short",
        **common,  # type: ignore[arg-type]
    )


for _kind in DOCS:
    _route(_kind)
