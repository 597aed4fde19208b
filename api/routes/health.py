"""``GET /healthz``: liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from cdp import __version__

from ..deps import CDPDep
from ..responses import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Is the server up and the store readable and writable?",
    responses={503: {"model": Health, "description": "The store cannot be written (`store` says why)"}},
)
def healthz(request: Request, response: Response, cdp: CDPDep) -> dict[str, Any]:
    cdp.store.reader().execute("SELECT 1").fetchone()
    scheduler = getattr(request.app.state, "scheduler", None)
    problem = cdp.store.probe_write() or cdp.ingest.write_error()
    if problem:
        response.status_code = 503
    return {
        "status": "degraded" if problem else "ok",
        "version": __version__,
        "scheduler": "running" if scheduler is not None and scheduler.running else "off",
        "store": problem or "writable",
    }
