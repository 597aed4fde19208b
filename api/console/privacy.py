"""Privacy requests in the console: the list with status and counts, a new request (with a confirmation step
that names the profiles and how much of them a deletion removes), and an export's download.

Read sessions see the list; submitting and downloading (the export holds the person's data) need an admin
session, and submitting the form's CSRF token too. Requests go through ``cdp.privacy`` exactly as the API's do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from cdp.errors import InvalidInput

from . import session
from .common import ConsoleRoute, cdp_of, render

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PAGE = 25
TYPES = {
    "delete": "Erase",
    "suppress_with_delete": "Suppress and erase",
    "suppress": "Suppress",
    "export": "Export",
    "unsuppress": "Lift a suppression",
}
IDENTIFIER_TYPES = {
    "email": "Email",
    "user_id": "User id",
    "phone": "Phone",
    "anonymous_id": "Anonymous id",
    "record": "CRM record (source:external_id; a : in the source as %3A)",
}
STATUSES = ("pending", "running", "done", "failed")
ERASING = ("delete", "suppress_with_delete")


def require_admin_view(request: Request) -> session.Session:
    """An admin session for a page that shows what only admins may see (no form: no CSRF token to check)."""
    current = session.require_session(request)
    if not current.admin:
        raise session.AdminRequired(
            "this needs an admin token: sign in with one from `cdp keys create --kind admin`", {"kind": current.kind}
        )
    return current


AdminViewer = Annotated[session.Session, Depends(require_admin_view)]


def _request_form(form: dict[str, str]) -> tuple[str, list[dict[str, str]]]:
    kind = form.get("type", "")
    if kind not in TYPES:
        raise InvalidInput(f"type must be one of {', '.join(TYPES)}", {"field": "type"})
    identifier_type, value = form.get("identifier_type", ""), form.get("value", "").strip()
    if identifier_type not in IDENTIFIER_TYPES:
        allowed = ", ".join(IDENTIFIER_TYPES)
        raise InvalidInput(f"identifier type must be one of {allowed}", {"field": "identifier_type"})
    if not value:
        raise InvalidInput("give the identifier's value", {"field": "value"})
    return kind, [{"type": identifier_type, "value": value}]


@router.get("/console/privacy")
def privacy(request: Request, _session: session.Viewer, cursor: str | None = None) -> Response:
    status = (request.query_params.get("status") or "").strip()
    if status and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", {"field": "status"})
    page = cdp_of(request).privacy.list_requests(status=status or None, limit=PAGE, cursor=cursor)
    submitted = request.query_params.get("submitted") or ""
    return render(
        request,
        "privacy.html",
        section="privacy",
        rows=page.data,
        next=page.next,
        filter_status=status,
        statuses=STATUSES,
        types=TYPES,
        identifier_types=IDENTIFIER_TYPES,
        submitted=submitted if submitted.startswith("prq_") else None,
    )


@router.post("/console/privacy/confirm")
async def confirm(request: Request, _admin: session.Admin) -> Response:
    """The confirmation step: who the request is about and what it will remove, before anything is sent."""
    form = await session.form(request)
    kind, identifiers = _request_form(form)
    preview = cdp_of(request).privacy_preview.preview(identifiers)
    return render(
        request,
        "privacy_confirm.html",
        section="privacy",
        kind=kind,
        label=TYPES[kind],
        erasing=kind in ERASING,
        identifier=identifiers[0],
        preview=preview,
    )


@router.post("/console/privacy")
async def submit(request: Request, admin: session.Admin) -> Response:
    form = await session.form(request)
    kind, identifiers = _request_form(form)
    if form.get("confirmed") != "yes":
        raise InvalidInput("confirm the request on its confirmation page first", {"field": "confirmed"})
    created = cdp_of(request).privacy.submit(kind, identifiers, requested_by=admin.key_id)
    return RedirectResponse(f"/console/privacy?submitted={created['id']}", status_code=303)


@router.get("/console/privacy/{request_id}/download")
def download(request: Request, request_id: str, _admin: AdminViewer) -> Response:
    path = cdp_of(request).privacy.download(request_id)
    return FileResponse(
        path,
        media_type="application/json",
        filename=f"{request_id}.json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
