"""Every error leaves as JSON ``{"code", "message", "details"}`` with the right 4xx/5xx."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdp.errors import CDPError

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return body


def install(app: FastAPI) -> None:
    @app.exception_handler(CDPError)
    async def cdp_error(request: Request, exc: CDPError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Basic realm="cdp"'} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")),
                "in": str(err.get("loc", ("",))[0]),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field'] or 'request'}: {first['message']}"
        content_type = request.headers.get("content-type", "")
        if first.get("in") == "body" and not first["field"] and "json" not in content_type.lower():
            # The whole body was refused: most often JSON sent without saying so (curl -d sends a form type).
            message = (
                f"the body must be a JSON object sent with Content-Type: application/json"
                f" (this request said {content_type or 'nothing'})"
            )
        return JSONResponse(error_body("invalid_request", message, {"errors": problems}), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)
