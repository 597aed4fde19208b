"""``GET /healthz``: liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from cdp import __version__

from ..deps import CDPDep
from ..responses import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Is the server up and the store readable?")
def healthz(request: Request, cdp: CDPDep) -> dict[str, Any]:
    cdp.store.reader().execute("SELECT 1").fetchone()
    scheduler = getattr(request.app.state, "scheduler", None)
    return {
        "status": "ok",
        "version": __version__,
        "scheduler": "running" if scheduler is not None and scheduler.running else "off",
    }
