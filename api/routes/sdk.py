"""Settings for the browser SDKs: ``GET /v1/projects/{writeKey}/settings`` (analytics.js ``cdnURL``) and
``GET /sourceConfig/`` (RudderStack v3 ``configUrl``). Both public (a write key is public in a page)
and cross-origin (see ``app.SDKCORS``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from ..deps import CDPDep, credential
from ..responses import RudderSourceConfig, SegmentSettings
from ..schemas import ERRORS

router = APIRouter(tags=["browser SDKs"])
UNKNOWN_KEY = {**ERRORS, 404: ERRORS[400] | {"description": "No active write key of that value"}}
SOURCE_CONFIG_PATHS = ("/sourceConfig/", "/sourceConfig")


def is_sdk_settings_path(path: str) -> bool:
    return path in SOURCE_CONFIG_PATHS or (path.startswith("/v1/projects/") and path.endswith("/settings"))


@router.get(
    "/v1/projects/{write_key}/settings",
    response_model=SegmentSettings,
    responses=UNKNOWN_KEY,
    summary="analytics.js settings for a write key (Segment's cdnURL points here)",
)
def segment_settings(write_key: str, request: Request, cdp: CDPDep) -> dict[str, Any]:
    base = request.base_url
    api_host = f"{base.netloc}{base.path.rstrip('/')}/v1"
    return cdp.browser.segment_settings(write_key, api_host=api_host, protocol=base.scheme)


def source_config(
    request: Request,
    cdp: CDPDep,
    write_key: str | None = Query(None, alias="writeKey", description="the source's write key"),
) -> dict[str, Any]:
    return cdp.browser.rudderstack_config(write_key or credential(request) or "")


for _path in SOURCE_CONFIG_PATHS:
    router.add_api_route(
        _path,
        source_config,
        methods=["GET"],
        response_model=RudderSourceConfig,
        responses=UNKNOWN_KEY,
        summary="RudderStack v3 source configuration (the JS SDK's configUrl points at this host)",
        operation_id="rudderstack_source_config" + ("" if _path.endswith("/") else "_no_slash"),
        include_in_schema=_path.endswith("/"),
    )
