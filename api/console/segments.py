"""Segments: the list with sizes and sparklines, a segment's page, the builder with its live preview."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cdp import CDP
from cdp.errors import CDPError, InvalidInput

from . import charts, session
from .common import ConsoleRoute, cdp_of, fragment, render
from .people import display_name, first_identifier

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PREVIEW_SAMPLE = 10_000
"""Stores with more profile rows than this get a preview estimated from a random sample of this many."""
SPARK_RUNS = 30
MEMBERS = 25
DEFINITION_KEYS = ("key", "name", "description", "schedule", "rule", "type", "model", "select")
TRAIT_OPS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "starts_with", "exists", "not_exists")
EXAMPLE = {
    "key": "",
    "name": "",
    "rule": {"all": [{"event": "Order Completed", "within": "30d"}]},
}


def _runs(cdp: CDP, key: str, limit: int) -> list[dict[str, Any]]:
    """The segment's last ``limit`` runs, oldest first."""
    return list(reversed(cdp.segments.history(key, limit=limit).data))


@router.get("/console/segments")
def segments(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    cdp = cdp_of(request)
    page = cdp.segments.list(limit=100, cursor=cursor)
    rows = []
    for segment in page.data:
        runs = _runs(cdp, segment["key"], SPARK_RUNS)
        sizes = [float(r["size"] or 0) for r in runs if r["status"] == "ok" or r["size"] is not None]
        rows.append(
            {
                **segment,
                "spark": charts.sparkline(sizes, label=f"size of {segment['name']} over its last {len(sizes)} runs"),
                "last_run": runs[-1] if runs else None,
            }
        )
    return render(request, "segments.html", section="segments", rows=rows, next=page.next)


def _definition(segment: dict[str, Any]) -> dict[str, Any]:
    return {k: segment[k] for k in DEFINITION_KEYS if segment.get(k) not in (None, "")}


@router.get("/console/segments/new")
def new_segment(request: Request, _session: session.Viewer) -> Response:
    return _builder(request, orjson.dumps(EXAMPLE, option=orjson.OPT_INDENT_2).decode(), editing=None)


@router.get("/console/segments/{key}/edit")
def edit_segment(request: Request, key: str, _session: session.Viewer) -> Response:
    segment = cdp_of(request).segments.get(key)
    text = orjson.dumps(_definition(segment), option=orjson.OPT_INDENT_2).decode()
    return _builder(request, text, editing=key)


def _builder(
    request: Request,
    text: str,
    *,
    editing: str | None,
    preview: dict[str, Any] | None = None,
    error: CDPError | None = None,
    status: int = 200,
) -> Response:
    cdp = cdp_of(request)
    return render(
        request,
        "builder.html",
        status=status,
        section="segments",
        text=text,
        editing=editing,
        preview=preview,
        error=error,
        trait_ops=TRAIT_OPS,
        segment_keys=[s["key"] for s in cdp.segments.list(limit=1000).data],
        event_names=cdp.quality_samples.event_names(),
    )


def parse_definition(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the definition is not valid JSON: {exc}", {"field": "definition"}) from exc
    if not isinstance(value, dict):
        raise InvalidInput("the definition must be a JSON object", {"field": "definition"})
    return value


def add_condition(definition: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The definition with one condition from the form's simple fields added to its top-level ``all``."""
    kind = form.get("cond_kind", "trait")
    if kind == "trait":
        field, op, raw = form.get("cond_trait", "").strip(), form.get("cond_op", "eq"), form.get("cond_value", "")
        if not field:
            raise InvalidInput("name the trait the condition tests", {"field": "cond_trait"})
        node: dict[str, Any] = {"trait": field, "op": op}
        if op not in ("exists", "not_exists"):
            node["value"] = _value(raw, many=op in ("in", "not_in"))
    elif kind == "event":
        name = form.get("cond_event", "").strip()
        if not name:
            raise InvalidInput("name the event the condition counts", {"field": "cond_event"})
        node = {"event": name}
        if form.get("cond_within", "").strip():
            node["within"] = form["cond_within"].strip()
        if form.get("cond_count", "").strip():
            node["count"] = {"op": "gte", "value": _value(form["cond_count"], many=False)}
        if form.get("cond_negate"):
            node = {"not": node}
    elif kind == "segment":
        node = {"in_segment": form.get("cond_segment", "").strip()}
    else:
        raise InvalidInput(f"unknown condition kind {kind!r}", {"field": "cond_kind"})
    rule = definition.get("rule")
    if isinstance(rule, dict) and isinstance(rule.get("all"), list):
        rule["all"].append(node)
    elif rule:
        definition["rule"] = {"all": [rule, node]}
    else:
        definition["rule"] = {"all": [node]}
    return definition


def _value(raw: str, *, many: bool) -> Any:
    """A typed value from a form field: JSON if it parses (numbers, booleans, lists), else the text."""
    if many and "," in raw and not raw.strip().startswith("["):
        return [_value(part.strip(), many=False) for part in raw.split(",")]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.strip()


def run_preview(cdp: CDP, definition: dict[str, Any]) -> dict[str, Any]:
    """The builder's preview: exact on stores of up to ``PREVIEW_SAMPLE`` profiles, else estimated from a random
    sample of that many (a whole-store pass takes seconds to tens of seconds on a million profiles)."""
    body = {k: v for k, v in definition.items() if k != "key"}
    result = cdp.segments.preview(body, sample=10, estimate_above=PREVIEW_SAMPLE)
    sample = []
    for member in result["sample"]:
        traits = cdp.profiles.get(member["profile_id"])["traits"]
        sample.append(
            {
                "id": member["profile_id"],
                "name": display_name(traits),
                "email": first_identifier(member["identifiers"], "email"),
            }
        )
    return {**result, "sample": sample}


@router.post("/console/segments/preview")
async def preview(request: Request, _session: session.Actor) -> Response:
    """The preview fragment for the builder's script (size, sample, compiled SQL) or the error it met."""
    form = await session.form(request)
    cdp = cdp_of(request)
    try:
        result = run_preview(cdp, parse_definition(form.get("definition", "")))
    except CDPError as exc:
        return fragment(_preview_html(None, exc))
    return fragment(_preview_html(result, None))


def _preview_html(result: dict[str, Any] | None, error: CDPError | None) -> str:
    from .common import TEMPLATES

    return TEMPLATES.get_template("_preview.html").render(preview=result, error=error)


@router.post("/console/segments/builder")
async def builder_action(request: Request, current: session.Actor) -> Response:
    """The builder form without script: add a condition, preview, or save (admin)."""
    form = await session.form(request)
    text, action, editing = form.get("definition", ""), form.get("action", "preview"), form.get("editing") or None
    cdp = cdp_of(request)
    try:
        definition = parse_definition(text)
        if action == "add":
            definition = add_condition(definition, form)
            text = orjson.dumps(definition, option=orjson.OPT_INDENT_2).decode()
            return _builder(request, text, editing=editing, preview=run_preview(cdp, definition))
        if action == "save":
            if not current.admin:
                raise session.AdminRequired("saving a segment needs an admin token", {"kind": current.kind})
            saved = cdp.segments.update(editing, definition) if editing else cdp.segments.create(definition)
            return RedirectResponse(f"/console/segments/{saved['key']}?saved=1", status_code=303)
        return _builder(request, text, editing=editing, preview=run_preview(cdp, definition))
    except CDPError as exc:
        return _builder(request, text, editing=editing, error=exc, status=exc.status)


@router.get("/console/segments/{key}")
def segment(request: Request, key: str, _session: session.Viewer, cursor: str | None = None) -> Response:
    cdp = cdp_of(request)
    seg = cdp.segments.get(key)
    members_page = cdp.segments.members(key, limit=MEMBERS, cursor=cursor)
    members = []
    for member in members_page.data:
        profile = cdp.profiles.get(member["profile_id"])
        traits, computed = profile["traits"], profile["computed"]
        members.append(
            {
                "id": member["profile_id"],
                "name": display_name(traits),
                "email": first_identifier(member["identifiers"], "email"),
                "country": (traits.get("address") or {}).get("country", ""),
                "orders": computed.get("order_count", ""),
                "revenue": computed.get("total_revenue", ""),
                "last_seen": computed.get("last_seen", ""),
                "entered_at": member["entered_at"],
            }
        )
    runs = cdp.segments.history(key, limit=50).data
    model, plot, children = None, None, []
    if seg["type"] in ("cluster", "propensity"):
        try:
            model = cdp.segments.model(key)
        except CDPError:
            model = None
        if seg["type"] == "cluster" and model is not None:
            plot = "data:image/png;base64," + base64.b64encode(cdp.segments.plot(key)).decode()
            children = cdp.segments.list(parent=seg.get("parent") or key, limit=100).data
    return render(
        request,
        "segment.html",
        section="segments",
        segment=seg,
        definition=_definition(seg),
        members=members,
        members_next=members_page.next,
        runs=runs,
        chart=charts.size_over_time(list(reversed(runs))),
        calibration=charts.calibration(model["metrics"].get("calibration") or []) if model else None,
        model=model,
        plot=plot,
        children=children,
        saved=request.query_params.get("saved") == "1",
        computed=request.query_params.get("computed"),
    )


@router.post("/console/segments/{key}/compute")
def compute(request: Request, key: str, _admin: session.Admin) -> Response:
    result = cdp_of(request).segments.compute(key, trigger="manual")
    return RedirectResponse(f"/console/segments/{key}?computed={result.run_id}", status_code=303)
