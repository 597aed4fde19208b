"""The HTTP application, wherever it was installed: ``api/`` in a checkout, ``cdp._http`` in a wheel.

The repository keeps the HTTP layer in its top-level ``api/`` folder; the wheel ships that folder inside
cdp (a top-level ``api`` package in site-packages would clash with anything of that name). ``api/``
imports itself relatively, so the same files work under both names.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def http_package() -> ModuleType:
    """The HTTP layer's package (``cdp._http`` when installed, else the checkout's ``api``)."""
    try:
        return importlib.import_module("cdp._http")
    except ModuleNotFoundError as exc:
        if exc.name != "cdp._http":
            raise
    return importlib.import_module("api")


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """``create_app`` of the HTTP layer (see ``api.app.create_app`` for the arguments)."""
    app: FastAPI = http_package().create_app(*args, **kwargs)
    return app
