"""The web console at ``/console``: server-rendered pages over the library facade (no SQL here), signed-in with a
read or admin token. ``install(app)`` adds its routes and static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import auth, ops, people, privacy, segments, stewardship
from .common import HERE


def install(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (auth, people, segments, ops, stewardship, privacy):
        app.include_router(module.router)
