"""People: search by any identifier or name (prefix), and the person page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cdp import CDP
from cdp.errors import InvalidInput, UnknownProfile

from . import charts, session, stewardship
from .common import ConsoleRoute, cdp_of, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PAGE = 25
TIMELINE = 25
MAX_NODES = 40


def display_name(traits: dict[str, Any]) -> str:
    name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    return name or str(traits.get("name") or traits.get("email") or "")


def first_identifier(identifiers: list[dict[str, str]], *kinds: str) -> str:
    for kind in kinds:
        for ident in identifiers:
            if ident["type"] == kind:
                return ident["value"]
    return ""


@router.get("/console/people")
def people(request: Request, _session: session.Viewer, q: str | None = None, cursor: str | None = None) -> Response:
    """With ``q``: every profile a name or identifier starting with it belongs to, in the order of what matched
    (an index walk: as fast on millions of profiles as on hundreds). Without: the people behind the newest
    events."""
    cdp = cdp_of(request)
    q = (q or "").strip()
    if q:
        page = cdp.profiles.find(q, limit=PAGE, cursor=cursor)
        found, nxt = page.data, page.next
    else:
        found, nxt = recently_active(cdp), None
    rows = [
        {
            "id": p["id"],
            "name": display_name(p["traits"]),
            "email": first_identifier(p["identifiers"], "email"),
            "user_id": first_identifier(p["identifiers"], "user_id"),
            "matched": p.get("matched"),
            "identifiers": len(p["identifiers"]),
            "updated_at": p["updated_at"],
        }
        for p in found
    ]
    return render(request, "people.html", section="people", q=q, rows=rows, next=nxt)


def recently_active(cdp: CDP) -> list[dict[str, Any]]:
    """Up to ``PAGE`` live profiles behind the newest events (else the newest profiles of a store without events)."""
    ids: list[str] = []
    for event in cdp.events.list(limit=500).data:
        pid = event.get("profileId")
        if pid and pid not in ids:
            ids.append(pid)
        if len(ids) >= PAGE:
            break
    if not ids:
        return cdp.profiles.search(None, limit=PAGE).data
    out: list[dict[str, Any]] = []
    for pid in ids:
        try:
            profile = cdp.profiles.get(pid)
        except UnknownProfile:
            continue
        if all(p["id"] != profile["id"] for p in out):
            out.append(profile)
    return out


def explain_picture(explain: dict[str, Any], identifiers: list[dict[str, str]]) -> dict[str, Any]:
    """The graph's nodes and edges, and one waterfall per Splink match."""
    edges: list[dict[str, Any]] = []
    waterfalls: list[dict[str, Any]] = []
    for edge in explain["edges"]:
        if edge["kind"] == "identifier":
            a = f"{edge['from']['type']}:{edge['from']['value']}"
            b = f"{edge['to']['type']}:{edge['to']['value']}"
            edges.append({"kind": "identifier", "a": a, "b": b, "label": f"seen together ({edge['rule']})"})
        else:
            n = len(waterfalls) + 1
            contributions = {k: float(v) for k, v in edge["comparisons"].items()}
            weight = float(edge["match_weight"])
            prior = weight - sum(contributions.values())
            # Comparisons that said nothing (both sides empty: weight 0) are left out of the picture.
            parts = sorted(((k, v) for k, v in contributions.items() if abs(v) >= 0.005), key=lambda kv: -abs(kv[1]))
            waterfalls.append(
                {
                    "n": n,
                    "left": edge["left"],
                    "right": edge["right"],
                    "weight": weight,
                    "probability": edge["match_probability"],
                    "model_version": edge["model_version"],
                    "chart": charts.waterfall(prior, parts, weight),
                    "parts": [("prior", prior), *parts],
                    "silent": len(contributions) - len(parts),
                }
            )
            edges.append(
                {
                    "kind": "probabilistic",
                    "a": edge["left"],
                    "b": edge["right"],
                    "label": f"Splink match {n}: weight {weight:.2f}",
                    "short": f"#{n} {weight:.1f}",
                    "href": f"#match-{n}",
                }
            )
    linked = {e["a"] for e in edges} | {e["b"] for e in edges}
    nodes = [f"{i['type']}:{i['value']}" for i in identifiers]
    nodes = sorted(nodes, key=lambda node: (node not in linked, node))[:MAX_NODES]
    return {
        "svg": charts.explain_graph(nodes, edges),
        "waterfalls": waterfalls,
        "edges": edges,
        "hidden": max(len(identifiers) - MAX_NODES, 0),
    }


@router.get("/console/people/{profile_id}")
def person(
    request: Request,
    profile_id: str,
    _session: session.Viewer,
    event: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    merge_q: str | None = None,
    done: str | None = None,
    other: str | None = None,
) -> Response:
    cdp = cdp_of(request)
    live = cdp.profiles.live_id(profile_id)
    if live != profile_id:
        return RedirectResponse(f"/console/people/{live}", status_code=303)
    profile = cdp.profiles.get(live)
    event, since, until = (v.strip() if v and v.strip() else None for v in (event, since, until))
    timeline_error = None
    try:
        timeline = cdp.profiles.events(live, event=event, since=since, until=until, limit=TIMELINE, cursor=cursor)
    except InvalidInput as exc:
        timeline_error = exc.message
        timeline = cdp.profiles.events(live, limit=TIMELINE)
    explain = cdp.profiles.explain(live)
    records = cdp.lineage.records(live)
    return render(
        request,
        "person.html",
        section="people",
        profile=profile,
        name=display_name(profile["traits"]) or live,
        traits=cdp.lineage.traits(live),
        records=records,
        record_fields=sorted({f for r in records for f in r["fields"]}),
        identities=cdp.profiles.identities(live),
        segments=cdp.segments.of_profile(live),
        merges=cdp.profiles.merges(live),
        picture=explain_picture(explain, profile["identifiers"]),
        timeline=timeline.data,
        timeline_next=timeline.next,
        timeline_error=timeline_error,
        filters={"event": event or "", "since": since or "", "until": until or ""},
        steward=stewardship.person_panel(cdp, live, merge_q),
        done={"kind": stewardship.DONE.get(done or ""), "other": other or ""} if done else None,
    )
