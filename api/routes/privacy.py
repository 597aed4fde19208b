"""Privacy: data-subject requests (delete, suppress, unsuppress, export), their status and an export's download,
and a profile's consent (admin token)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from ..deps import AdminKey, CDPDep, ReadKey
from ..paging import PageCursor, PageLimit
from ..schemas import ERRORS, Cursor

router = APIRouter(tags=["privacy"])
NOT_FOUND = {**ERRORS, 404: ERRORS[400] | {"description": "No such privacy request"}}
RequestType = Literal["delete", "suppress", "suppress_with_delete", "unsuppress", "export"]
Status = Literal["pending", "running", "done", "failed"]


class IdentifierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["user_id", "email", "phone", "anonymous_id", "record"]
    value: str = Field(
        description="For a record: 'source:external_id' (a ':' in the source written %3A, a '%' as %25).",
        min_length=1,
        max_length=1024,
    )


class PrivacyRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: RequestType
    identifiers: list[IdentifierIn] | None = Field(None, description="Who the request is about (1-100).")
    profile_id: str | None = Field(None, description="Or the profile (merged-away ids lead to their survivor).")


class Download(BaseModel):
    available: bool
    url: str | None
    expires_at: str | None


class PrivacyRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: RequestType
    status: Status
    subject: list[dict[str, str]] = Field(description="The identifiers as salted hashes: the values are never kept.")
    found: dict[str, Any] = Field(description="Profiles found, and a note when others' identifiers shared them.")
    counts: dict[str, int] = Field(description="Rows removed (or exported, or suppressed) per kind.")
    requested_by: str | None = Field(description="The id of the admin key that asked.")
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    download: Download | None = None


class PrivacyRequestsPage(BaseModel):
    data: list[PrivacyRequest]
    cursor: Cursor


class ExportDocument(BaseModel):
    """Everything stored about the person (sections of rows as stored, JSON columns parsed)."""

    model_config = ConfigDict(extra="allow")
    request_id: str
    generated_at: str
    profile: list[dict[str, Any]] = Field(description="Each profile as the API shows it, with trait_sources, consent")
    identifiers: list[dict[str, Any]]
    records: list[dict[str, Any]]
    events: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    segment_history: list[dict[str, Any]]
    webhook_notifications: list[dict[str, Any]]
    counts: dict[str, int]


class Consent(BaseModel):
    model_config = ConfigDict(extra="allow")
    profile_id: str
    categories: dict[str, dict[str, Any]] = Field(description="category -> {granted, at, origin}")
    conflicts: list[dict[str, Any]] = Field(description="Merges where the profiles disagreed (stricter value kept).")


@router.post(
    "/v1/privacy/requests",
    status_code=202,
    response_model=PrivacyRequest,
    responses=ERRORS,
    summary="Ask to delete, suppress, unsuppress or export a person (runs in the background)",
)
def create(cdp: CDPDep, key: AdminKey, body: PrivacyRequestIn) -> dict[str, Any]:
    identifiers = None if body.identifiers is None else [i.model_dump() for i in body.identifiers]
    return cdp.privacy.submit(body.type, identifiers, body.profile_id, requested_by=key.id)


@router.get("/v1/privacy/requests", response_model=PrivacyRequestsPage, responses=ERRORS, summary="Privacy requests")
def list_requests(
    cdp: CDPDep,
    _key: AdminKey,
    status: Status | None = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return cdp.privacy.list_requests(status=status, limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/privacy/requests/{request_id}", response_model=PrivacyRequest, responses=NOT_FOUND, summary="One request"
)
def get_request(cdp: CDPDep, _key: AdminKey, request_id: str) -> dict[str, Any]:
    return cdp.privacy.get(request_id)


@router.get(
    "/v1/privacy/requests/{request_id}/download",
    response_class=FileResponse,
    responses={
        **NOT_FOUND,
        200: {"model": ExportDocument, "description": "The export: one JSON document"},
        409: ERRORS[400] | {"description": "The export is not finished yet"},
        410: ERRORS[400] | {"description": "The export expired and was removed"},
    },
    summary="Download an export (until it expires)",
)
def download(cdp: CDPDep, _key: AdminKey, request_id: str) -> FileResponse:
    path = cdp.privacy.download(request_id)
    return FileResponse(
        path, media_type="application/json", filename=f"{request_id}.json", headers={"Cache-Control": "no-store"}
    )


@router.get(
    "/v1/profiles/{profile_id}/consent",
    response_model=Consent,
    responses={**ERRORS, 404: ERRORS[400] | {"description": "No such profile"}},
    summary="A profile's consent",
)
def consent(cdp: CDPDep, _key: ReadKey, profile_id: str) -> dict[str, Any]:
    return cdp.privacy.consent(profile_id)
