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


# An identifier the API takes: not blank, at most 1,024 characters; numbers are taken too, as their digits (SDKs
# send numeric user ids). A blank string counts as absent.
_ID_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"\S"}
_ID: dict[str, Any] = {"anyOf": [_ID_TEXT, {"type": "number"}]}
_MAYBE_ID: dict[str, Any] = {"anyOf": [{"type": "string", "maxLength": 1024}, {"type": "number"}, {"type": "null"}]}
# userId or anonymousId: one of them, not blank (what /v1/track and the others check).
_WHO: dict[str, Any] = {
    "anyOf": [
        {"required": ["userId"], "properties": {"userId": _ID}},
        {"required": ["anonymousId"], "properties": {"anonymousId": _ID}},
    ]
}


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra=_WHO)
    userId: str | float | None = Field(
        None, json_schema_extra=_MAYBE_ID, description="Your id for the user; userId or anonymousId is required."
    )
    anonymousId: str | float | None = Field(
        None, json_schema_extra=_MAYBE_ID, description="A device/browser id for a user not yet identified."
    )
    messageId: str | float | None = Field(
        None,
        json_schema_extra=_MAYBE_ID,
        description="Unique per message; repeats are acknowledged and dropped. A number is taken as its digits.",
    )
    timestamp: Any = Field(
        None,
        description="When it happened on the client (ISO-8601). A value that is not a time is kept aside and counted "
        "(`cdp quality`); the event takes the time it was received.",
    )
    sentAt: Any = Field(
        None,
        description="When the client sent it; used to correct clock skew. A value that is not a time is ignored and "
        "counted (`cdp quality`).",
    )
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    writeKey: str | None = Field(
        None,
        description="Alternative to HTTP Basic auth (a key sent in the Authorization header is used first). Blank: "
        "ignored; unknown or revoked: 401 for a single message, that message refused in a batch.",
    )


class TrackMessage(_Message):
    event: str = Field(min_length=1, pattern=r"\S", examples=["Order Completed"])
    properties: dict[str, Any] | None = None


class IdentifyMessage(_Message):
    traits: dict[str, Any] | None = None


class PageMessage(_Message):
    name: Any = Field(None, description="The page or screen name; a value that is not a string is ignored.")
    properties: dict[str, Any] | None = None


class GroupMessage(_Message):
    groupId: str | float = Field(json_schema_extra=_ID)
    traits: dict[str, Any] | None = None


class AliasMessage(_Message):
    model_config = ConfigDict(extra="allow", json_schema_extra={})  # alias needs userId itself
    previousId: str | float = Field(json_schema_extra=_ID)
    userId: str | float = Field(json_schema_extra=_ID)


class BatchItem(_Message):
    type: Literal["track", "identify", "page", "screen", "group", "alias"]
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    groupId: str | None = None
    previousId: str | None = None


def _batch_items() -> dict[str, Any]:
    """A batch's message: one of the single messages' schemas, with its ``type`` and its own optional writeKey."""
    kinds: dict[str, type[BaseModel]] = {
        "track": TrackMessage,
        "identify": IdentifyMessage,
        "page": PageMessage,
        "screen": PageMessage,
        "group": GroupMessage,
        "alias": AliasMessage,
    }
    variants = []
    for kind, model in kinds.items():
        schema = model.model_json_schema()
        schema.pop("title", None)
        schema["properties"] = {"type": {"const": kind}, **schema["properties"]}
        schema["properties"]["writeKey"] = {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "This message's own write key (blank: the batch's); unknown or revoked: this message "
            "is refused",
        }
        schema["required"] = ["type", *schema.get("required", [])]
        variants.append(schema)
    return {"oneOf": variants}


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    batch: list[dict[str, Any]] = Field(
        description="Up to 2,500 messages, each with a `type`.",
        json_schema_extra={"items": _batch_items(), "maxItems": 2500},
    )
    context: Any = Field(
        None, description="Merged into each message's context (a value that is not an object: ignored)."
    )
    integrations: Any = Field(None, description="Merged into each message's integrations (not an object: ignored).")
    sentAt: Any = Field(None, description="When the client sent the batch (ISO-8601); not a time: ignored and counted.")
    writeKey: str | None = None


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    source: Any = Field(
        None,
        examples=["salesforce"],
        description="The system the record comes from: required text unless the request names one (?source=); "
        "when it does, this field is kept as a trait like any other.",
    )
    external_id: str | float = Field(
        examples=["0035g00000AbCdE"],
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "number"}]},
        description="The record's id in its source; a number is taken as its digits.",
    )
    # Canonical fields are cleaned (emails lower-cased, phones to E.164, dates to ISO); a value that leaves nothing
    # usable (a number for a name, an object) is stored as null and reported in `warnings`, not refused.
    email: Any = Field(None, description="Text; cleaned. Nothing usable left after cleaning: null, with a warning.")
    phone: Any = Field(None, description="Text; to E.164. Nothing usable left after cleaning: null, with a warning.")
    first_name: Any = Field(None, description="Text; cleaned like email.")
    last_name: Any = Field(None, description="Text; cleaned like email.")
    birthday: Any = Field(None, description="A date; cleaned like email.")
    address: Any = Field(
        None, description="An object: street, city, postal_code, country. Any other value is kept as a trait."
    )
    company: Any = Field(None, description="Text; cleaned like email.")
    title: Any = Field(None, description="Text; cleaned like email.")
    traits: Any = Field(
        None,
        description="An object of any other fields, kept as-is; a value that is not an object is kept as the trait "
        "`traits`.",
    )


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
