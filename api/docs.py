"""``/docs`` (Swagger UI) and ``/redoc`` served offline, and the security schemes of ``/openapi.json``.

The Swagger UI and ReDoc bundles come from an installed PyPI package (``fastapi-offline`` ships both as
static files; we use its files only), so the docs render without internet. ``/openapi.json`` declares the
credentials we accept: ``WriteKey`` (HTTP Basic, the write key as username) on the tracking and records
routes, ``Token`` (Bearer, a read or admin token) on the others; Authorize then makes Try-it-out work.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"
# The docs pages may load nothing from another host (ReDoc's footer asks a CDN for its logo: refused here).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)
WRITE_KEY_SCHEME = {
    "type": "http",
    "scheme": "basic",
    "description": "The write key as the HTTP Basic username, empty password (as Segment's SDKs send it).",
}


def assets_dir() -> Path:
    """The static files of the installed ``fastapi-offline`` package (not imported: only its files)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the docs assets need the fastapi-offline package: pip install fastapi-offline")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    """Mount the assets and the two pages; wrap ``app.openapi`` to declare the write-key scheme."""
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        """What a person opening the server's address wants: the console (it asks for a token first)."""
        return RedirectResponse("/console", status_code=307)

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True},
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CSP
        return page

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["WriteKey"] = WRITE_KEY_SCHEME
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
