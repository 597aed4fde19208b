"""``GET /v1/quality``: data-quality report per source and event name (read token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import CDPDep, ReadKey
from ..responses import JSONObject
from ..schemas import ERRORS

router = APIRouter(tags=["quality"])


@router.get(
    "/v1/quality",
    response_model=JSONObject,
    responses=ERRORS,
    summary="Completeness, validity, uniqueness and timeliness",
)
def quality(cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    return cdp.quality.report()
