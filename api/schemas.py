"""Pydantic models used to describe requests and responses in the OpenAPI document.

The tracking routes parse bodies themselves (any Content-Type, gzip, Segment's error shape), so
these models document them rather than validate them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    code: str = Field(examples=["invalid_message"])
    message: str = Field(examples=["track needs `event`, the name of the action"])
    details: dict[str, Any] | None = None


class Success(BaseModel):
    success: Literal[True] = True


# An identifier the API takes: not blank, at most 1,024 characters (numbers are taken too, as their digits).
_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S"}
# userId or anonymousId: one of them, not blank (what /v1/track and the others check).
_WHO: dict[str, Any] = {
    "anyOf": [
        {"required": ["userId"], "properties": {"userId": _ID}},
        {"required": ["anonymousId"], "properties": {"anonymousId": _ID}},
    ]
}


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_WHO)
    userId: str | None = Field(None, description="Your id for the user; userId or anonymousId is required.")
    anonymousId: str | None = Field(None, description="A device/browser id for a user not yet identified.")
    messageId: str | None = Field(
        None, max_length=1024, description="Unique per message; repeats are acknowledged and dropped."
    )
    timestamp: str | None = Field(None, description="When it happened on the client (ISO-8601).")
    sentAt: str | None = Field(None, description="When the client sent it; used to correct clock skew.")
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = Field(None, description="Alternative to HTTP Basic auth.")


class TrackMessage(_Message):
    event: str = Field(min_length=1, pattern=r"\S", examples=["Order Completed"])
    properties: dict[str, Any] | None = None


class IdentifyMessage(_Message):
    traits: dict[str, Any] | None = None


class PageMessage(_Message):
    name: str | None = None
    properties: dict[str, Any] | None = None


class GroupMessage(_Message):
    groupId: str = Field(min_length=1, max_length=1024, pattern=r"\S")
    traits: dict[str, Any] | None = None


class AliasMessage(_Message):
    model_config = ConfigDict(extra="allow", json_schema_extra={})  # alias needs userId itself
    previousId: str = Field(min_length=1, max_length=1024, pattern=r"\S")
    userId: str = Field(min_length=1, max_length=1024, pattern=r"\S")


class BatchItem(_Message):
    type: Literal["track", "identify", "page", "screen", "group", "alias"]
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    groupId: str | None = None
    previousId: str | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    batch: list[dict[str, Any]] = Field(description="Up to 2,500 messages, each with a `type`.")
    context: dict[str, Any] | None = Field(None, description="Merged into each message's context.")
    integrations: dict[str, Any] | None = None
    sentAt: str | None = None
    writeKey: str | None = None


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    source: str = Field(examples=["salesforce"])
    external_id: str = Field(examples=["0035g00000AbCdE"])
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birthday: str | None = None
    address: dict[str, Any] | None = Field(None, description="street, city, postal_code, country")
    company: str | None = None
    title: str | None = None
    traits: dict[str, Any] | None = Field(None, description="Any other fields, kept as-is.")


class ImportSummaryOut(BaseModel):
    received: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    errors: list[dict[str, Any]]
    errors_truncated: bool
    nulled: int = 0
    warnings: list[dict[str, Any]] = []
    warnings_truncated: bool = False


class Cursor(BaseModel):
    next: str | None
    has_more: bool


class EventsPage(BaseModel):
    data: list[dict[str, Any]]
    cursor: Cursor


WRITE_KEY_SECURITY: list[dict[str, list[str]]] = [{"WriteKey": []}]
TOKEN_SECURITY: list[dict[str, list[str]]] = [{"Token": []}]


def body_doc(model: type[BaseModel], *, ndjson: bool = False, array: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema()
    if array:
        schema = {"type": "array", "items": schema}
    content: dict[str, Any] = {"application/json": {"schema": schema}, "text/plain": {"schema": schema}}
    if ndjson:
        content["application/x-ndjson"] = {"schema": {"type": "string", "description": "One record per line"}}
    return {"requestBody": {"required": True, "content": content}}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input: says which field (and for a batch which index)"},
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked key"},
    403: {"model": ErrorBody, "description": "The key may not make this call"},
    413: {"model": ErrorBody, "description": "Body over the size limit"},
}
