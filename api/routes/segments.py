"""Segments: admin token to write, read token to read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cdp.errors import InvalidJSON

from ..deps import AdminKey, CDPDep, ReadKey, get_cdp, json_body, require_read
from ..paging import PageCursor, PageLimit
from ..responses import DataPage, JSONObject, Preview, Run, Segment
from ..schemas import ERRORS, TOKEN_SECURITY

router = APIRouter(tags=["segments"])
NOT_FOUND = {**ERRORS, 404: ERRORS[400] | {"description": "No such segment or profile (the message says which)"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: ERRORS[400] | {"description": "A segment with that key exists, or other segments use this one"}
}
DEFINITION = Body(..., description="A segment definition (see GET /v1/segments/schema)", examples=[{
    "key": "high_value", "name": "High-value customers", "schedule": {"every": "15m"},
    "rule": {"all": [{"event": "Order Completed", "within": "30d", "count": {"op": "gte", "value": 2},
                      "sum": {"property": "revenue", "op": "gte", "value": 500}}]},
}])  # fmt: skip


BODY_SCHEMA = {"type": "object", "description": "A segment definition (see GET /v1/segments/schema)"}


async def _json(request: Request) -> dict[str, Any]:
    value = await json_body(request)
    if not isinstance(value, dict):
        raise InvalidJSON("the body must be a JSON object (a segment definition)")
    return value


@router.get("/v1/segments/schema", response_model=JSONObject, summary="The JSON Schema of segment definitions")
def schema(cdp: CDPDep) -> dict[str, Any]:
    return cdp.segments.schema()


@router.post(
    "/v1/segments",
    response_model=Segment,
    status_code=201,
    responses={**ERRORS, **CONFLICT},
    summary="Create a segment",
)
def create(cdp: CDPDep, _key: AdminKey, definition: dict[str, Any] = DEFINITION) -> dict[str, Any]:
    return cdp.segments.create(definition)


@router.post(
    "/v1/segments/preview",
    response_model=Preview,
    responses=ERRORS,
    summary="Size, sample members and SQL, without saving",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": BODY_SCHEMA}}}},
)
async def preview(request: Request, cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    definition = await _json(request)
    return await run_in_threadpool(cdp.segments.preview, definition)


@router.get(
    "/v1/segments",
    response_model=DataPage,
    responses=ERRORS,
    summary="List segments (children of a cluster segment with ?parent=)",
)
def list_segments(
    cdp: CDPDep,
    _key: ReadKey,
    parent: str | None = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return cdp.segments.list(parent=parent, limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/segments/{key}", response_model=Segment, responses=NOT_FOUND, summary="One segment, with its size and last run"
)
def get(cdp: CDPDep, _key: ReadKey, key: str) -> dict[str, Any]:
    return cdp.segments.get(key)


@router.put(
    "/v1/segments/{key}",
    response_model=Segment,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Replace a segment's definition",
)
def update(cdp: CDPDep, _key: AdminKey, key: str, definition: dict[str, Any] = DEFINITION) -> dict[str, Any]:
    return cdp.segments.update(key, definition)


@router.delete("/v1/segments/{key}", status_code=204, responses={**NOT_FOUND, **CONFLICT}, summary="Delete a segment")
def delete(cdp: CDPDep, _key: AdminKey, key: str) -> Response:
    cdp.segments.delete(key)
    return Response(status_code=204)


@router.get(
    "/v1/segments/{key}/members",
    response_model=DataPage,
    responses=NOT_FOUND,
    summary="Current members, cursor-paginated",
)
def members(
    cdp: CDPDep,
    _key: ReadKey,
    key: str,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
    traits: str | None = Query(
        None,
        description="Comma-separated trait names to add to each member (e.g. email,first_name; at most 20)",
        json_schema_extra={"minLength": 1, "pattern": r"[^,\s]"},
    ),
) -> dict[str, Any]:
    return cdp.segments.members(key, limit=limit, cursor=cursor, traits=traits).to_dict()


@router.post(
    "/v1/segments/{key}/compute", response_model=Run, responses=NOT_FOUND, summary="Recompute now; returns the run"
)
async def compute(cdp: CDPDep, _key: AdminKey, key: str) -> dict[str, Any]:
    result = await run_in_threadpool(cdp.segments.compute, key)
    return result.to_dict()


@router.get(
    "/v1/segments/{key}/history",
    response_model=DataPage,
    responses=NOT_FOUND,
    summary="Runs: time, duration, size, entered, exited",
)
def history(cdp: CDPDep, _key: ReadKey, key: str, limit: PageLimit = 100, cursor: PageCursor = None) -> dict[str, Any]:
    return cdp.segments.history(key, limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/profiles/{profile_id}/segments",
    response_model=DataPage,
    responses=NOT_FOUND,
    openapi_extra={"security": TOKEN_SECURITY},
    summary="Segments the profile is in",
)
async def profile_segments(request: Request, profile_id: str) -> dict[str, Any]:
    # The hot read path (real-time personalisation asks it per page view): one thread-pool hand-off, not the
    # three that sync dependencies and a sync handler cost. The key check (a cached lookup) runs on the event
    # loop; the two index reads run in a worker thread, since on a store larger than the page cache they can
    # wait for the disk, and the loop must not.
    cdp = get_cdp(request)
    require_read(request, cdp)

    def read() -> list[dict[str, Any]]:
        return cdp.segments.of_profile(cdp.profiles.live_id(profile_id))

    return {"data": await run_in_threadpool(read), "cursor": {"next": None, "has_more": False}}
