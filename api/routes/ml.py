"""Machine-learned segments' models and pictures, and job-title personas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cdp.errors import InvalidInput

from ..deps import AdminKey, CDPDep, ReadKey, json_body
from ..responses import DataList, DataPage, JSONObject
from ..schemas import ERRORS
from .segments import NOT_FOUND

router = APIRouter(tags=["machine learning"])
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "A PNG picture"}}
_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
_LABEL = {
    "type": "object",
    "required": ["title", "persona"],
    "properties": {"title": {**_TEXT, "maxLength": 200}, "persona": {**_TEXT, "maxLength": 64}},
}
LABELS: dict[str, Any] = {
    "description": 'One label {"title", "persona"}, a list of them, or {"labels": [...]}',
    "anyOf": [
        _LABEL,
        {"type": "array", "minItems": 1, "items": _LABEL},
        {
            "type": "object",
            "required": ["labels"],
            "properties": {"labels": {"type": "array", "minItems": 1, "items": _LABEL}},
        },
    ],
}
TITLES: dict[str, Any] = {
    "type": "object",
    "required": ["titles"],
    "properties": {"titles": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "string"}}},
}


@router.get(
    "/v1/segments/{key}/model",
    response_model=JSONObject,
    responses=NOT_FOUND,
    summary="An ML segment's model: metrics, top features",
)
def model(cdp: CDPDep, _key: ReadKey, key: str) -> dict[str, Any]:
    return cdp.segments.model(key)


@router.get(
    "/v1/segments/{key}/plot.png",
    responses={**NOT_FOUND, **PNG},
    response_class=Response,
    summary="A cluster segment's clusters on the two features that set them apart most; legend with sizes",
)
async def plot(cdp: CDPDep, _key: ReadKey, key: str) -> Response:
    png = await run_in_threadpool(cdp.segments.plot, key)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get(
    "/v1/personas",
    response_model=JSONObject,
    responses=ERRORS,
    summary="Persona labels per persona, the model and its accuracy history",
)
def personas(cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    return cdp.personas.status()


@router.get(
    "/v1/personas/labels",
    response_model=DataPage,
    responses=ERRORS,
    summary="Every title -> persona label given so far",
)
def labels(cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    return {"data": cdp.personas.labels(), "cursor": {"next": None, "has_more": False}}


@router.post(
    "/v1/personas/labels",
    response_model=JSONObject,
    responses=ERRORS,
    summary="Label job titles with personas; retrains and refreshes every profile's persona",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": LABELS}}}},
)
async def add_labels(request: Request, cdp: CDPDep, _key: AdminKey) -> dict[str, Any]:
    body = await json_body(request)
    return await run_in_threadpool(cdp.personas.label_json, body)


@router.get(
    "/v1/personas/uncertain",
    response_model=DataPage,
    responses=ERRORS,
    summary="Titles the model is least sure of (label these next)",
)
async def uncertain(cdp: CDPDep, _key: ReadKey, n: int = Query(20, ge=1, le=1000)) -> dict[str, Any]:
    data = await run_in_threadpool(cdp.personas.uncertain, n)
    return {"data": data, "cursor": {"next": None, "has_more": False}}


@router.post(
    "/v1/personas/predict",
    response_model=DataList,
    responses=ERRORS,
    summary="The persona the model gives some titles",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": TITLES}}}},
)
async def predict(request: Request, cdp: CDPDep, _key: ReadKey) -> dict[str, Any]:
    body = await json_body(request)
    titles = body.get("titles") if isinstance(body, dict) else None
    if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles) or not 1 <= len(titles) <= 1000:
        raise InvalidInput('send {"titles": ["...", ...]} with 1 to 1000 titles', {"path": "/titles"})
    return {"data": await run_in_threadpool(cdp.personas.predict, titles)}
