"""``create_app()``: the FastAPI application over one :class:`cdp.CDP`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from cdp import CDP, Scheduler, Settings, __version__

from . import console, docs, errors
from .access_log import AccessLog
from .guard import Guard
from .json_bodies import JSONBodies
from .routes import (
    charts,
    events,
    health,
    identity,
    ml,
    privacy,
    profiles,
    quality,
    records,
    sdk,
    segments,
    tracking,
    webhooks,
)


class TrackingCORS:
    """CORS for what browsers call cross-origin: the tracking paths (POST) and the SDK settings (GET)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["POST", "OPTIONS"], allow_headers=["*"], max_age=86400
        )
        self.settings_cors = CORSMiddleware(
            app, allow_origins=origins, allow_methods=["GET", "OPTIONS"], allow_headers=["*"], max_age=86400
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in tracking.TRACKING_PATHS:
            await self.cors(scope, receive, send)
        elif scope["type"] == "http" and sdk.is_sdk_settings_path(scope["path"]):
            await self.settings_cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, *, cdp: CDP | None = None, scheduler: bool | None = None) -> FastAPI:
    """An app over ``cdp`` (or one it opens from ``settings`` and closes on shutdown)."""
    settings = cdp.settings if cdp is not None else (settings or Settings())
    run_scheduler = settings.scheduler_enabled if scheduler is None else scheduler

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = cdp is None
        instance = cdp if cdp is not None else CDP(settings)
        app.state.cdp = instance
        app.state.scheduler = None
        instance.start_writer()  # the ingest writer process, if any: before the first request
        instance.privacy.start()  # privacy requests a crash interrupted resume; new ones run in the background
        if run_scheduler:
            app.state.scheduler = Scheduler(instance)
            app.state.scheduler.start()
            instance.start_background()
        try:
            yield
        finally:
            if app.state.scheduler is not None:
                app.state.scheduler.shutdown()
            if owned:
                instance.close()

    app = FastAPI(
        title="cdp",
        version=__version__,
        description=(
            "An embedded customer data platform. Tracking endpoints speak Segment's HTTP API: "
            "authenticate with the write key as the HTTP Basic username. Read endpoints take "
            "`Authorization: Bearer <token>`. Here, press Authorize: the write key under `WriteKey` "
            "(empty password), a read or admin token under `Token`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    docs.install(app)
    console.install(app)
    routers = (tracking, sdk, records, events, profiles, identity, segments, charts, ml, webhooks, privacy)
    for module in (*routers, quality, health):
        app.include_router(module.router)
    app.add_middleware(JSONBodies)  # raw-body routes (guard.rule(raw=True)) are left alone
    app.add_middleware(Guard)  # auth and body limits (declared on each route) before any body is read; JSON 500s
    app.add_middleware(TrackingCORS, origins=settings.cors_origins)
    if settings.access_log:
        app.add_middleware(AccessLog)
    return app
