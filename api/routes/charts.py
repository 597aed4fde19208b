"""Segment pictures for people: a cluster segment's clusters and cluster profiles, any segment's size over
time (PNG or SVG)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from ..deps import CDPDep, ReadKey
from .segments import NOT_FOUND

router = APIRouter(tags=["segments"])
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


def _picture(fmt: str) -> dict[int | str, dict[str, Any]]:
    kind = "A PNG picture" if fmt == "png" else "An SVG picture (text kept as text)"
    return {**NOT_FOUND, 200: {"content": {MEDIA[fmt]: {}}, "description": kind}}


async def _send(draw: Callable[..., bytes], *args: Any) -> Response:
    fmt = args[1]
    body = await run_in_threadpool(draw, *args)
    return Response(body, media_type=MEDIA[fmt], headers={"Cache-Control": "no-store"})


HISTORY = "A segment's size over time, with the profiles that entered and exited (failed runs marked)"
PROFILES = "A cluster segment's clusters: each one's feature averages in original units beside everyone's"
CLUSTERS = "A cluster segment's clusters on the two features that set them apart most; legend with sizes"


@router.get("/v1/segments/{key}/history.png", response_class=Response, responses=_picture("png"), summary=HISTORY)
async def history_png(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    return await _send(cdp.segments.history_chart, key, "png")


@router.get("/v1/segments/{key}/history.svg", response_class=Response, responses=_picture("svg"), summary=HISTORY)
async def history_svg(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    return await _send(cdp.segments.history_chart, key, "svg")


@router.get("/v1/segments/{key}/plot.svg", response_class=Response, responses=_picture("svg"), summary=CLUSTERS)
async def plot_svg(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    return await _send(cdp.segments.plot, key, "svg")


@router.get("/v1/segments/{key}/profiles.png", response_class=Response, responses=_picture("png"), summary=PROFILES)
async def profiles_png(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    return await _send(cdp.segments.plot, key, "png", "profiles")


@router.get("/v1/segments/{key}/profiles.svg", response_class=Response, responses=_picture("svg"), summary=PROFILES)
async def profiles_svg(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    return await _send(cdp.segments.plot, key, "svg", "profiles")
