"""``GET /v1/events``: what arrived, newest first (read token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from cdp.errors import InvalidInput

from ..deps import CDPDep, ReadKey
from ..paging import PageCursor, PageLimit
from ..schemas import ERRORS, EventsPage

router = APIRouter(tags=["events"])
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


@router.get("/v1/events", response_model=EventsPage, responses=ERRORS, summary="Raw events, newest first")
def list_events(
    cdp: CDPDep,
    _key: ReadKey,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    profile_id: str | None = None,
    event: str | None = Query(None, description="Event name (track) or page/screen name"),
    type: str | None = Query(
        None,
        description="track, identify, page, screen, group or alias",
        json_schema_extra={"enum": list(EVENT_TYPES)},
    ),
    since: str | None = Query(
        None, description="Only events at or after this ISO-8601 time", json_schema_extra={"format": "date-time"}
    ),
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    if type is not None and type not in EVENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPES)}, not {type!r}", {"field": "type"})
    page = cdp.events.list(
        user_id=user_id,
        anonymous_id=anonymous_id,
        profile_id=profile_id,
        event=event,
        type=type,
        since=since,
        limit=limit,
        cursor=cursor,
    )
    return page.to_dict()
