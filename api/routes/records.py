"""``POST /v1/records``: CRM records as a JSON array or NDJSON, upserted by (source, external_id)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from cdp.errors import InvalidInput, InvalidJSON

from .. import guard
from ..deps import CDPDep, credential
from ..schemas import ERRORS, WRITE_KEY_SECURITY, ImportSummaryOut, RecordIn, body_doc
from .tracking import read_body

router = APIRouter(tags=["records"])


@router.post(
    "/v1/records",
    response_model=ImportSummaryOut,
    responses=ERRORS,
    openapi_extra={
        **body_doc(RecordIn, ndjson=True, array=True),
        "security": WRITE_KEY_SECURITY,
        **guard.rule(raw=True, max_body="max_records_bytes"),
    },
    summary="Upsert CRM records (idempotent per source and external_id)",
)
async def upsert_records(
    request: Request,
    cdp: CDPDep,
    source: str | None = Query(
        None,
        description="Source for records that do not name one.",
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
    ),
) -> dict[str, Any]:
    cdp.keys.verify(credential(request), "write")
    if source is not None and not source.strip():
        raise InvalidInput("source must not be blank: name the system the records come from (e.g. salesforce)")
    body = await read_body(request, cdp.settings.max_records_bytes)
    if not body.strip():
        raise InvalidJSON("the body is empty: send a JSON array of records, or NDJSON (one record a line)")
    summary = await run_in_threadpool(
        cdp.ingest.records_body, body, content_encoding=request.headers.get("content-encoding"), source=source
    )
    return summary.to_dict()
