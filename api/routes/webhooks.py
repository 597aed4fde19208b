"""Webhooks: subscriptions, secrets, deliveries and replays (admin token for everything)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field

from ..deps import AdminKey, CDPDep
from ..paging import PageCursor, PageLimit
from ..schemas import ERRORS, Cursor

router = APIRouter(tags=["webhooks"])
NOT_FOUND = {**ERRORS, 404: ERRORS[400] | {"description": "No such webhook (or message, for a replay)"}}
TRAITS = (
    "Trait names (dotted paths, at most 20) to carry in segment.entered/exited payloads as profile.traits;"
    " null: identifiers only. A value over 512 bytes of JSON is sent as null."
)
EventType = Literal["segment.entered", "segment.exited", "profile.merged", "profile.split", "profile.deleted"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        description="http(s) URL; private, loopback and link-local hosts are refused.",
        json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"},
    )
    events: list[EventType] | None = Field(None, description="Event types to receive (default: all).")
    segments: list[str] | None = Field(None, description="Segment keys (children included); null for every segment.")
    description: str | None = Field(None, max_length=1000)
    enabled: bool = True
    traits: list[str] | None = Field(None, description=TRAITS)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    events: list[EventType] | None = None
    segments: list[str] | None = Field(None, description="null: every segment")
    description: str | None = Field(None, max_length=1000)
    enabled: bool | None = Field(None, description="false pauses deliveries; true resumes them (and the backlog)")
    traits: list[str] | None = Field(None, description=TRAITS)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_seconds: float | None = Field(
        None, ge=0, le=30 * 86400, description="How long the previous secret keeps signing (default 24 h; 0: not)"
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_id: str | None = Field(None, description="Send this message (webhook-id) again, whatever its state.")
    since: str | None = Field(None, description="ISO-8601: send every failed message since then again.")


class Webhook(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    url: str
    description: str | None
    events: list[str]
    segments: list[str] | None
    traits: list[str] | None = None
    enabled: bool
    disabled_reason: Literal["manual", "gone", "failing"] | None
    disabled_at: str | None
    created_at: str
    updated_at: str
    secret_rotated_at: str | None
    previous_secret_expires_at: str | None = Field(description="Until then the previous secret signs too.")
    last_success_at: str | None
    failing_since: str | None
    paused_until: str | None = Field(description="Set by a Retry-After on 429/503.")
    held_reason: str | None = Field(
        None, description="Why pending deliveries are held (e.g. the secret-key file is missing); null when not."
    )


class WebhookCreated(Webhook):
    secret: str = Field(description="whsec_<base64>: shown only in this answer.")


class Attempt(BaseModel):
    attempt: int
    at: str
    status_code: int | None
    latency_ms: int | None
    response: str | None = Field(description="The first bytes of the answer's body.")
    error: str | None
    outcome: Literal["succeeded", "retrying", "failed"]
    next_attempt_at: str | None


class Delivery(BaseModel):
    message_id: str = Field(description="The webhook-id header, the same on every attempt.")
    type: str
    segment_key: str | None
    profile_id: str | None
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status_code: int | None
    created_at: str
    finished_at: str | None
    attempts: list[Attempt]
    held_reason: str | None = Field(None, description="Why this pending delivery is held (not yet sent), if it is.")


class WebhooksPage(BaseModel):
    data: list[Webhook]
    cursor: Cursor


class DeliveriesPage(BaseModel):
    data: list[Delivery]
    cursor: Cursor


class Replayed(BaseModel):
    replayed: int
    enabled: bool = Field(description="false: the endpoint is disabled, so nothing goes out until it is enabled")


@router.post("/v1/webhooks", status_code=201, response_model=WebhookCreated, responses=ERRORS, summary="Subscribe")
def create(cdp: CDPDep, _key: AdminKey, body: WebhookIn) -> dict[str, Any]:
    return cdp.webhooks.create(body.url, body.events, body.segments, body.description, body.enabled, body.traits)


@router.get("/v1/webhooks", response_model=WebhooksPage, responses=ERRORS, summary="List webhooks")
def list_webhooks(cdp: CDPDep, _key: AdminKey, limit: PageLimit = 100, cursor: PageCursor = None) -> dict[str, Any]:
    return cdp.webhooks.list(limit=limit, cursor=cursor).to_dict()


@router.get("/v1/webhooks/{webhook_id}", response_model=Webhook, responses=NOT_FOUND, summary="One webhook")
def get(cdp: CDPDep, _key: AdminKey, webhook_id: str) -> dict[str, Any]:
    return cdp.webhooks.get(webhook_id)


@router.patch(
    "/v1/webhooks/{webhook_id}", response_model=Webhook, responses=NOT_FOUND, summary="Change, enable or disable"
)
def update(cdp: CDPDep, _key: AdminKey, webhook_id: str, body: WebhookPatch) -> dict[str, Any]:
    return cdp.webhooks.update(webhook_id, body.model_dump(exclude_unset=True))


@router.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=NOT_FOUND, summary="Delete a webhook")
def delete(cdp: CDPDep, _key: AdminKey, webhook_id: str) -> Response:
    cdp.webhooks.delete(webhook_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/rotate-secret",
    response_model=WebhookCreated,
    responses=NOT_FOUND,
    summary="New signing secret; the previous one keeps signing during the overlap",
)
def rotate_secret(cdp: CDPDep, _key: AdminKey, webhook_id: str, body: RotateIn | None = Body(None)) -> dict[str, Any]:
    return cdp.webhooks.rotate_secret(webhook_id, body.overlap_seconds if body else None)


@router.post("/v1/webhooks/{webhook_id}/test", response_model=Delivery, responses=NOT_FOUND, summary="Send a ping now")
def test(cdp: CDPDep, _key: AdminKey, webhook_id: str) -> dict[str, Any]:
    return cdp.webhooks.test(webhook_id)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=DeliveriesPage,
    responses=NOT_FOUND,
    summary="Messages sent to this webhook, newest first, with every attempt",
)
def deliveries(
    cdp: CDPDep,
    _key: AdminKey,
    webhook_id: str,
    status: Literal["pending", "succeeded", "failed"] | None = None,
    message_id: str | None = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    page = cdp.webhooks.deliveries(webhook_id, status=status, message_id=message_id, limit=limit, cursor=cursor)
    return page.to_dict()


@router.post(
    "/v1/webhooks/{webhook_id}/replay",
    response_model=Replayed,
    responses=NOT_FOUND,
    summary="Send one message again, or every failed one since a time",
)
def replay(cdp: CDPDep, _key: AdminKey, webhook_id: str, body: ReplayIn) -> dict[str, Any]:
    return cdp.webhooks.replay(webhook_id, message_id=body.message_id, since=body.since)
