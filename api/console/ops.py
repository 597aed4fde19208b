"""Live events, webhooks, data quality and the identity model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cdp.errors import CDPError, InvalidInput, MatchModelMissing

from . import charts, session
from .common import TEMPLATES, ConsoleRoute, cdp_of, fragment, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
EVENTS = 50
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


# -- live events -----------------------------------------------------------------------------------


def _event_rows(request: Request, filters: dict[str, str], cursor: str | None) -> tuple[list[dict[str, Any]], Any]:
    chosen = {k: v or None for k, v in filters.items()}
    if chosen["type"] and chosen["type"] not in EVENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPES)}", {"field": "type"})
    page = cdp_of(request).events.list(
        event=chosen["event"],
        type=chosen["type"],
        user_id=chosen["user_id"],
        anonymous_id=chosen["anonymous_id"],
        since=chosen["since"],
        limit=EVENTS,
        cursor=cursor,
    )
    rows = [
        {
            "id": e["id"],
            "type": e["type"],
            "name": e.get("event") or e.get("name") or "",
            "user_id": e.get("userId") or "",
            "anonymous_id": e.get("anonymousId") or "",
            "profile_id": e.get("profileId") or "",
            "timestamp": e["timestamp"],
            "received_at": e.get("receivedAt"),
            "source": e.get("source") or "",
            "flags": e.get("qualityFlags") or [],
            "properties": e.get("properties") or e.get("traits") or {},
        }
        for e in page.data
    ]
    return rows, page.next


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: (q.get(k) or "").strip() for k in ("event", "type", "user_id", "anonymous_id", "since")}


@router.get("/console/events")
def events(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    filters = _filters(request)
    error: InvalidInput | None = None
    rows: list[dict[str, Any]] = []
    nxt: str | None = None
    try:
        rows, nxt = _event_rows(request, filters, cursor)
    except InvalidInput as exc:
        error = exc
    rejected = cdp_of(request).quality_samples.rejected()
    return render(
        request,
        "events.html",
        section="events",
        rows=rows,
        next=nxt,
        filters=filters,
        error=error,
        rejected=rejected,
        types=EVENT_TYPES,
        live=cursor is None,
    )


@router.get("/console/events/fragment")
def events_fragment(request: Request, _session: session.Viewer) -> Response:
    """The table body of the newest events, for the page's auto-refresh."""
    rows, _ = _event_rows(request, _filters(request), None)
    return fragment(TEMPLATES.get_template("_events_rows.html").render(rows=rows))


# -- webhooks --------------------------------------------------------------------------------------


@router.get("/console/webhooks")
def webhooks(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    return _webhooks_page(request, cursor=cursor)


def _webhooks_page(request: Request, *, cursor: str | None = None, **extra: Any) -> Response:
    cdp = cdp_of(request)
    page = cdp.webhooks.list(limit=100, cursor=cursor)
    return render(
        request,
        "webhooks.html",
        section="webhooks",
        status=extra.pop("status", 200),
        rows=page.data,
        next=page.next,
        segment_keys=[s["key"] for s in cdp.segments.list(limit=1000).data],
        **extra,
    )


@router.post("/console/webhooks")
async def create_webhook(request: Request, _admin: session.Admin) -> Response:
    form = await session.form(request)
    kinds = [k for k in ("segment.entered", "segment.exited", "profile.merged") if form.get(f"event_{k}")]
    segments = [s.strip() for s in form.get("segments", "").split(",") if s.strip()] or None
    try:
        created = cdp_of(request).webhooks.create(
            form.get("url", "").strip(), kinds or None, segments, form.get("description") or None
        )
    except CDPError as exc:
        return _webhooks_page(request, error=exc, status=exc.status, form=form)
    return _webhook_page(request, created["id"], secret=created["secret"], status=201)


def _webhook_page(request: Request, webhook_id: str, *, status: int = 200, **extra: Any) -> Response:
    cdp = cdp_of(request)
    endpoint = cdp.webhooks.get(webhook_id)
    filter_status = request.query_params.get("status") or None
    cursor = request.query_params.get("cursor") or None
    deliveries = cdp.webhooks.deliveries(webhook_id, status=filter_status, limit=25, cursor=cursor)
    return render(
        request,
        "webhook.html",
        status=status,
        section="webhooks",
        endpoint=endpoint,
        deliveries=deliveries.data,
        next=deliveries.next,
        filter_status=filter_status or "",
        **extra,
    )


@router.get("/console/webhooks/{webhook_id}")
def webhook(request: Request, webhook_id: str, _session: session.Viewer) -> Response:
    return _webhook_page(request, webhook_id)


@router.post("/console/webhooks/{webhook_id}/test")
def test_webhook(request: Request, webhook_id: str, _admin: session.Admin) -> Response:
    delivery = cdp_of(request).webhooks.test(webhook_id)
    return RedirectResponse(f"/console/webhooks/{webhook_id}?pinged={delivery['status']}", status_code=303)


@router.post("/console/webhooks/{webhook_id}/rotate")
def rotate_webhook(request: Request, webhook_id: str, _admin: session.Admin) -> Response:
    rotated = cdp_of(request).webhooks.rotate_secret(webhook_id)
    return _webhook_page(request, webhook_id, secret=rotated["secret"], notice="Secret rotated")


@router.post("/console/webhooks/{webhook_id}/replay")
async def replay_webhook(request: Request, webhook_id: str, _admin: session.Admin) -> Response:
    form = await session.form(request)
    message_id, since = form.get("message_id") or None, form.get("since") or None
    result = cdp_of(request).webhooks.replay(webhook_id, message_id=message_id, since=since)
    return RedirectResponse(f"/console/webhooks/{webhook_id}?replayed={result['replayed']}", status_code=303)


@router.post("/console/webhooks/{webhook_id}/enabled")
async def toggle_webhook(request: Request, webhook_id: str, _admin: session.Admin) -> Response:
    form = await session.form(request)
    cdp_of(request).webhooks.update(webhook_id, {"enabled": form.get("enabled") == "true"})
    return RedirectResponse(f"/console/webhooks/{webhook_id}", status_code=303)


# -- quality and identity --------------------------------------------------------------------------


@router.get("/console/quality")
def quality(request: Request, _session: session.Viewer) -> Response:
    report = cdp_of(request).quality.report()
    return render(request, "quality.html", section="quality", report=report)


@router.get("/console/identity")
def identity(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    cdp = cdp_of(request)
    model: dict[str, Any] | None
    missing: str | None = None
    try:
        model = cdp.identity.describe_model()
    except MatchModelMissing as exc:
        model, missing = None, exc.message
    conflicts = cdp.profiles.conflicts(limit=50, cursor=cursor)
    return render(
        request,
        "identity.html",
        section="identity",
        model=model,
        missing=missing,
        chart=charts.model_weights(model["comparisons"]) if model else None,
        conflicts=conflicts.data,
        next=conflicts.next,
    )


@router.get("/console/quality/samples")
def quality_samples(
    request: Request,
    _session: session.Viewer,
    source: str,
    kind: str = "events",
    event: str | None = None,
    flag: str | None = None,
) -> Response:
    """The flagged events (of one source and event name) or CRM records (of one source) behind a count."""
    samples = cdp_of(request).quality_samples
    if kind not in ("events", "records"):
        raise InvalidInput("kind must be events or records", {"field": "kind"})
    rows = samples.events(source, event or "", flag) if kind == "events" else samples.records(source, flag)
    return render(
        request,
        "quality_samples.html",
        section="quality",
        kind=kind,
        source=source,
        event=event or "",
        flag=flag or "",
        rows=rows,
    )
