"""The HTTP layer: a thin FastAPI app over the ``cdp`` library."""

from .app import create_app

__all__ = ["create_app"]
