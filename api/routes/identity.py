"""Identity stewardship: the review queue, labels, the labels' quality estimate, manual merge, split and undo.

Reading needs a read token; deciding and acting need an admin token (who acted is the key's id).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..deps import AdminKey, CDPDep, ReadKey
from ..paging import PageCursor, PageLimit
from ..responses import DataPage, Open
from ..schemas import ERRORS

router = APIRouter(tags=["identity"])
NOT_FOUND = {**ERRORS, 404: ERRORS[400] | {"description": "No such review item or profile"}}
ACTION = {**NOT_FOUND, 409: ERRORS[400] | {"description": "Refused as asked (already one profile, already decided)"}}


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["match", "no_match", "skip"] = Field(
        description="match: a must-link (the profiles merge now); no_match: a cannot-link; skip: ask again later"
    )
    note: str | None = Field(None, max_length=2000)


class RecordRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)
    external_id: str = Field(min_length=1)


class IdentifierRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, description="user_id, anonymous_id, email, phone, external_id or record")
    value: str = Field(min_length=1)


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    other: str = Field(min_length=1, description="The profile to merge with this one (the older survives)")
    note: str | None = Field(None, max_length=2000)


class SplitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    records: list[RecordRef] = Field(default_factory=list, description="CRM records to move to a new profile")
    identifiers: list[IdentifierRef] = Field(default_factory=list, description="Identifiers to move with them")
    note: str | None = Field(None, max_length=2000)


class UndoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=2000)


class ReviewItem(Open):
    id: int
    reason: str
    match_probability: float | None
    comparisons: dict[str, Any]
    status: str
    left: dict[str, Any]
    right: dict[str, Any]


class Action(Open):
    kind: str
    profile_id: str
    at: str


class Quality(Open):
    labelled_pairs: int
    scored_pairs: int
    estimated_precision: float | None
    estimated_recall: float | None


@router.get(
    "/v1/identity/review",
    response_model=DataPage,
    responses=ERRORS,
    summary="Doubtful matches to review, most informative first",
    description=(
        "Pairs scored between `CDP_REVIEW_THRESHOLD` and the match threshold (`below_threshold`) and links "
        "refused by merge protection (`merge_protection`) or the chaining guard (`chaining`), whose sides are "
        "in different profiles. Each item: `id`, `reason`, `message`, `match_probability`, `match_weight`, "
        "`threshold`, `comparisons` (partial weight per comparison), `left` and `right` (`node`, `source`, "
        "`external_id`, the record's `fields`, and its `profile` with traits and records). Ordered by distance "
        "to the threshold (closest first). Filters: `status` (open, skipped, decided), `reason`, `source`."
    ),
)
def review_list(
    cdp: CDPDep,
    _key: ReadKey,
    status: Literal["open", "skipped", "decided"] = "open",
    reason: Literal["below_threshold", "merge_protection", "chaining"] | None = None,
    source: str | None = Query(None, description="Only pairs with a record of this source on either side"),
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return cdp.review.page(status=status, reason=reason, source=source, limit=limit, cursor=cursor).to_dict()


@router.get("/v1/identity/review/{item_id}", response_model=ReviewItem, responses=NOT_FOUND, summary="One review item")
def review_get(cdp: CDPDep, _key: ReadKey, item_id: int) -> dict[str, Any]:
    return cdp.review.get(item_id)


@router.post(
    "/v1/identity/review/{item_id}",
    response_model=ReviewItem,
    responses=ACTION,
    summary="Decide a review item (admin)",
    description=(
        "`match` stores a must-link and merges the two profiles now (`reason: manual`); `no_match` stores a "
        "cannot-link (if the two are one profile, the next `cdp resolve` splits them at the weakest edges); "
        "`skip` moves the item to `status=skipped`. Every later run and the real-time linker honour the labels."
    ),
)
async def review_decide(cdp: CDPDep, key: AdminKey, item_id: int, body: DecisionIn) -> dict[str, Any]:
    return await run_in_threadpool(cdp.review.decide, item_id, body.decision, note=body.note, key_id=key.id)


@router.get(
    "/v1/identity/labels",
    response_model=DataPage,
    responses=ERRORS,
    summary="Human labels (must-links and cannot-links), oldest first",
)
def labels_list(cdp: CDPDep, _key: ReadKey, limit: PageLimit = 100, cursor: PageCursor = None) -> dict[str, Any]:
    return cdp.labels.page(limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/identity/quality",
    response_model=Quality,
    responses=ERRORS,
    summary="The match threshold measured against the labels",
    description=(
        "Labelled pairs, the current model's agreement with them, a confusion matrix and the estimated "
        "precision and recall at the model's threshold (labels near the threshold are over-represented: "
        "pessimistic estimates). Also the review queue's counts by status."
    ),
)
async def quality(cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    return await run_in_threadpool(cdp.identity_quality)


@router.post(
    "/v1/profiles/{profile_id}/merge",
    response_model=Action,
    responses=ACTION,
    summary="Merge another profile into this one by hand (admin)",
    description=(
        "The older profile survives; identifiers, records, events, groups and memberships follow. Recorded in "
        "`…/merges` with `reason: manual`, sends `profile.merged`, and stored as a must-link that later runs keep."
    ),
)
async def merge(cdp: CDPDep, key: AdminKey, profile_id: str, body: MergeIn) -> dict[str, Any]:
    return await run_in_threadpool(cdp.stewardship.merge, profile_id, body.other, note=body.note, key_id=key.id)


@router.post(
    "/v1/profiles/{profile_id}/split",
    response_model=Action,
    responses=ACTION,
    summary="Split records and identifiers off to a new profile (admin)",
    description=(
        "The records and identifiers named move to a new profile (events and records follow the identifiers "
        "that anchor them); traits are recomputed for both. Recorded in `…/merges` with `reason: manual`, sends "
        "`profile.split`, and stored as a cannot-link (and must-links within the moved part)."
    ),
)
async def split(cdp: CDPDep, key: AdminKey, profile_id: str, body: SplitIn) -> dict[str, Any]:
    return await run_in_threadpool(
        cdp.stewardship.split,
        profile_id,
        [r.model_dump() for r in body.records],
        [i.model_dump() for i in body.identifiers],
        note=body.note,
        key_id=key.id,
    )


@router.post(
    "/v1/profiles/{profile_id}/undo",
    response_model=Action,
    responses=ACTION,
    summary="Undo the last manual merge or split of this profile (admin)",
)
async def undo(
    cdp: CDPDep, key: AdminKey, profile_id: str, body: UndoIn = Body(default_factory=UndoIn)
) -> dict[str, Any]:
    return await run_in_threadpool(cdp.stewardship.undo, profile_id, key_id=key.id, note=body.note)
