"""Response models of the read and admin routes, so ``/openapi.json`` describes every answer.

Each model names the fields the contract promises; ``Open`` models also let through whatever else the
library adds (documented in the route's summary), so a new field never needs a release of this layer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .schemas import Cursor


class Open(BaseModel):
    """The named fields, and any others the library adds."""

    model_config = ConfigDict(extra="allow")


class DataList(Open):
    """``{"data": [...]}``: a complete list."""

    data: list[dict[str, Any]]


class DataPage(DataList):
    """``{"data": [...], "cursor": {"next", "has_more"}}``: one page of a list."""

    cursor: Cursor


class Health(Open):
    status: str = Field(description="ok, or degraded when the store cannot be written (the answer is then 503)")
    version: str
    scheduler: str
    store: str = Field("writable", description="writable, or why the store cannot be written")


class Identifier(BaseModel):
    type: str
    value: str


class Profile(Open):
    id: str
    traits: dict[str, Any]
    computed: dict[str, Any]
    identifiers: list[Identifier]
    created_at: str
    updated_at: str


class Segment(Open):
    """A segment's definition as sent (``rule`` or ``model``/``select``), with its size and last run."""

    key: str
    name: str
    description: str | None
    type: str
    parent: str | None
    schedule: dict[str, str] | None
    created_at: str
    updated_at: str


class Run(Open):
    segment_key: str
    run_id: int
    status: str
    size: int | None
    entered: int
    exited: int
    duration_ms: int
    error: str | None
    note: str | None = None


class Preview(Open):
    size: int
    sample: list[dict[str, Any]]
    sql: str
    params: list[Any]


class JSONObject(Open):
    """A JSON object whose fields the route's summary describes (reports, models, JSON Schemas)."""


class SegmentSettings(Open):
    """analytics.js settings: ``integrations["Segment.io"]`` says where and how to send."""

    integrations: dict[str, Any]


class RudderSourceConfig(Open):
    """RudderStack v3 source configuration: ``source`` with ``id``, ``config`` and ``destinations``."""

    source: dict[str, Any]
