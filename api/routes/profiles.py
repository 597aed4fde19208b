"""Profiles (read token): one profile, lookups by identifier, timeline, identities, explain, merges."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from cdp import Page

from ..deps import CDPDep, ReadKey
from ..paging import PageCursor, PageLimit
from ..responses import DataPage, JSONObject, Profile
from ..schemas import ERRORS

router = APIRouter(tags=["profiles"])
NOT_FOUND = {**ERRORS, 404: ERRORS[400] | {"description": "No such profile (the message says which id)"}}


@router.get(
    "/v1/profiles",
    response_model=DataPage,
    responses={**ERRORS, 404: ERRORS[400] | {"description": "No such segment"}},
    summary="List and search profiles, most recently seen first",
    description=(
        "`q` prefix-matches any identifier (user_id, anonymous_id, email, phone, external ids) or a first, last "
        "or full name; `segment` keeps the members of one segment. Items: `id`, `traits`, `identifiers`, "
        "`created_at`, `updated_at` (last seen). Cursor pagination."
    ),
)
def search(
    cdp: CDPDep,
    _key: ReadKey,
    q: str | None = Query(None, description="Prefix of a name, email, phone or any identifier"),
    segment: str | None = Query(None, description="Only members of this segment (its key)"),
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return cdp.profiles.search(q, segment=segment, limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/profiles/lookup", response_model=Profile, responses=NOT_FOUND, summary="Find a profile by any identifier"
)
def lookup(
    cdp: CDPDep,
    _key: ReadKey,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    source: str | None = Query(None, description="CRM source, with external_id"),
    external_id: str | None = None,
) -> dict[str, Any]:
    pid = cdp.profiles.lookup_id(
        user_id=user_id, anonymous_id=anonymous_id, email=email, phone=phone, source=source, external_id=external_id
    )
    return cdp.profiles.get(pid)


@router.get(
    "/v1/profiles/{profile_id}",
    response_model=Profile,
    responses=NOT_FOUND,
    summary="A unified profile (merged ids answer with the survivor)",
)
def get_profile(
    cdp: CDPDep,
    _key: ReadKey,
    profile_id: str,
    explain_traits: bool = Query(
        False, description="Add trait_sources: each trait's record or event and the survivorship rule that chose it"
    ),
) -> dict[str, Any]:
    return cdp.profiles.get(profile_id, explain_traits=explain_traits)


@router.get(
    "/v1/profiles/{profile_id}/events",
    response_model=DataPage,
    responses=NOT_FOUND,
    summary="The profile's timeline, newest first",
)
def profile_events(
    cdp: CDPDep,
    _key: ReadKey,
    profile_id: str,
    event: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    return cdp.profiles.events(profile_id, event=event, since=since, until=until, limit=limit, cursor=cursor).to_dict()


@router.get(
    "/v1/profiles/{profile_id}/identities",
    response_model=JSONObject,
    responses=NOT_FOUND,
    summary="Identifiers, CRM records, groups",
)
def identities(cdp: CDPDep, _key: ReadKey, profile_id: str) -> dict[str, Any]:
    return cdp.profiles.identities(profile_id)


@router.get(
    "/v1/profiles/{profile_id}/explain",
    response_model=JSONObject,
    responses=NOT_FOUND,
    summary="Why these records are one profile",
)
def explain(cdp: CDPDep, _key: ReadKey, profile_id: str) -> dict[str, Any]:
    return cdp.profiles.explain(profile_id)


@router.get(
    "/v1/profiles/{profile_id}/merges",
    response_model=DataPage,
    responses=NOT_FOUND,
    summary="Merges and splits, with reasons",
)
def merges(cdp: CDPDep, _key: ReadKey, profile_id: str) -> dict[str, Any]:
    return Page(cdp.profiles.merges(profile_id)).to_dict()


@router.get(
    "/v1/identity/model",
    response_model=JSONObject,
    responses=NOT_FOUND,
    summary="The match model in use: trained or default, threshold and how it was chosen, weights",
)
def identity_model(cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    return cdp.identity.describe_model()


@router.get(
    "/v1/identity/conflicts", response_model=DataPage, responses=ERRORS, summary="Links refused by merge protection"
)
def conflicts(cdp: CDPDep, _key: ReadKey, limit: PageLimit = 100, cursor: PageCursor = None) -> dict[str, Any]:
    return cdp.profiles.conflicts(limit=limit, cursor=cursor).to_dict()
