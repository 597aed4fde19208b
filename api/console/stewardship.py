"""Identity stewardship in the console: the review queue, and manual merge, split and undo on the person page.

Reading needs a session; deciding, merging, splitting and undoing need an admin session and the form's CSRF
token. Every action goes through the facade (``cdp.review``, ``cdp.stewardship``), so it is audited, labelled
and kept by later runs exactly as the API's are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cdp import CDP, parse_record_key
from cdp.errors import InvalidInput

from . import charts, session
from .common import ConsoleRoute, cdp_of, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
REVIEW_PAGE = 10
REASONS = {
    "below_threshold": "Scored between the review threshold and the match threshold",
    "merge_protection": "Merge protection refused the link",
    "chaining": "The chaining guard refused the link",
}
STATUSES = ("open", "skipped", "decided")
DECISIONS = {"match": "Match", "no_match": "No match", "skip": "Skip"}
CANDIDATES = 10
DONE = {
    "merged": "Merged by hand",
    "split": "Split by hand: the chosen records and identifiers moved to a new profile",
    "unmerge": "Undone: the manual merge was taken apart again",
    "unsplit": "Undone: the split-off profile was merged back",
}


# -- the review queue ------------------------------------------------------------------------------


def _review_filters(params: Any) -> dict[str, str]:
    return {k: (params.get(k) or "").strip() for k in ("status", "reason", "source")}


def _fields_of(side: dict[str, Any]) -> dict[str, Any]:
    """A record's fields; for an identifier that is not a record (a user id), its profile's traits, flattened
    (``address.city`` as ``address_city``, as records name it)."""
    if side.get("fields"):
        return dict(side["fields"])
    out: dict[str, Any] = {}
    for key, value in ((side.get("profile") or {}).get("traits") or {}).items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in value.items() if isinstance(v, str | int | float)})
        elif isinstance(value, str | int | float):
            out[key] = value
    return out


def _side_fields(item: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    left, right = _fields_of(item["left"]), _fields_of(item["right"])
    return [(f, left.get(f, ""), right.get(f, "")) for f in sorted(set(left) | set(right))]


def review_card(item: dict[str, Any]) -> dict[str, Any]:
    """One item as the page shows it: both sides, the fields side by side, the partial weights and their
    waterfall, and why it was not merged."""
    contributions = {k: float(v) for k, v in (item.get("comparisons") or {}).items()}
    weight = item.get("match_weight")
    parts = sorted(((k, v) for k, v in contributions.items() if abs(v) >= 0.005), key=lambda kv: -abs(kv[1]))
    chart = None
    prior = None
    if weight is not None and contributions:
        prior = float(weight) - sum(contributions.values())
        chart = charts.waterfall(prior, parts, float(weight), width=480)
    why = REASONS.get(item["reason"], item["reason"])
    if item["reason"] == "below_threshold" and item.get("threshold") is not None:
        why += f" ({item['threshold']:g}): the model was not sure enough to merge"
    return {
        **item,
        "why": why,
        "fields": _side_fields(item),
        "parts": ([("prior", prior)] if prior is not None else []) + parts,
        "chart": chart,
    }


@router.get("/console/identity/review")
def review(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    """The pairs the model doubts, most informative first, filtered by status, reason and source."""
    filters = _review_filters(request.query_params)
    status = filters["status"] or "open"
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", {"field": "status"})
    cdp = cdp_of(request)
    page = cdp.review.page(
        status=status,
        reason=filters["reason"] or None,
        source=filters["source"] or None,
        limit=REVIEW_PAGE,
        cursor=cursor,
    )
    done = request.query_params.get("decided")
    return render(
        request,
        "review.html",
        section="review",
        items=[review_card(i) for i in page.data],
        next=page.next,
        filters={**filters, "status": status},
        reasons=REASONS,
        statuses=STATUSES,
        decisions=DECISIONS,
        counts=cdp.review.counts(),
        decided=done if done and done.isdigit() else None,
        decision=DECISIONS.get(request.query_params.get("decision") or ""),
        back=urlencode({k: v for k, v in filters.items() if v}),
    )


@router.post("/console/identity/review/{item_id}")
async def decide(request: Request, item_id: int, admin: session.Admin) -> Response:
    form = await session.form(request)
    decision = form.get("decision", "")
    note = form.get("note", "").strip() or None
    cdp_of(request).review.decide(item_id, decision, note=note, key_id=admin.key_id)
    back = dict(parse_qsl(form.get("back", "")))
    filters = {k: v for k, v in back.items() if k in ("status", "reason", "source") and v}
    return RedirectResponse(
        f"/console/identity/review?{urlencode({**filters, 'decided': item_id, 'decision': decision})}",
        status_code=303,
    )


# -- manual merge, split and undo on the person page -----------------------------------------------


def person_panel(cdp: CDP, profile_id: str, merge_q: str | None) -> dict[str, Any]:
    """What the person page's stewardship section needs: merge candidates found by search (never the
    profile itself) and the identifiers and records that can be split off."""
    q = (merge_q or "").strip()
    candidates: list[dict[str, Any]] = []
    if q:
        for found in cdp.profiles.find(q, limit=CANDIDATES + 1).data:
            if found["id"] != profile_id and len(candidates) < CANDIDATES:
                candidates.append(found)
    return {"merge_q": q, "candidates": candidates}


def _note(form: dict[str, str]) -> str:
    note = form.get("note", "").strip()
    if not note:
        raise InvalidInput(
            "write a note saying why: it is kept with the action in the merge history", {"field": "note"}
        )
    return note


@router.post("/console/people/{profile_id}/merge")
async def merge(request: Request, profile_id: str, admin: session.Admin) -> Response:
    form = await session.form(request)
    other = form.get("other_id", "").strip() or form.get("other", "").strip()
    if not other:
        raise InvalidInput("choose a profile found by search, or paste its id", {"field": "other"})
    note = _note(form)
    done = cdp_of(request).stewardship.merge(profile_id, other, note=note, key_id=admin.key_id)
    query = urlencode({"done": "merged", "other": done["merged_id"]})
    return RedirectResponse(f"/console/people/{done['profile_id']}?{query}#steward", status_code=303)


@router.post("/console/people/{profile_id}/split")
async def split(request: Request, profile_id: str, admin: session.Admin) -> Response:
    await session.form(request)  # read and cached by the CSRF check; checkboxes repeat their name
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    records, identifiers = [], []
    for name, value in pairs:
        kind, _, rest = value.partition(":")
        record = parse_record_key(value) if name == "record" else None
        if record is not None:
            records.append({"source": record[0], "external_id": record[1]})
        elif name == "identifier" and kind and rest:
            identifiers.append({"type": kind, "value": rest})
    if not records and not identifiers:
        raise InvalidInput("tick at least one record or identifier to move to a new profile", {"field": "records"})
    note = _note(dict(pairs))
    done = cdp_of(request).stewardship.split(profile_id, records, identifiers, note=note, key_id=admin.key_id)
    query = urlencode({"done": "split", "other": done["new_profile_id"]})
    return RedirectResponse(f"/console/people/{done['profile_id']}?{query}#steward", status_code=303)


@router.post("/console/people/{profile_id}/undo")
async def undo(request: Request, profile_id: str, admin: session.Admin) -> Response:
    form = await session.form(request)
    note = _note(form)
    done = cdp_of(request).stewardship.undo(profile_id, key_id=admin.key_id, note=note)
    query = urlencode({"done": done["kind"], "other": done.get("other_id") or ""})
    return RedirectResponse(f"/console/people/{done['profile_id']}?{query}#steward", status_code=303)
