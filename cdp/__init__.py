"""cdp: an embedded customer data platform."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdp.core import CDP
    from cdp.errors import CDPError
    from cdp.jsonlimits import check_json_body
    from cdp.keys import KeyInfo
    from cdp.pagination import Page
    from cdp.record_ids import parse_record_key, record_key
    from cdp.scheduler import Scheduler
    from cdp.settings import Settings
    from cdp.textsafe import clean_text

__version__ = "0.1.0"
__all__ = [
    "CDP",
    "CDPError",
    "KeyInfo",
    "Page",
    "Scheduler",
    "Settings",
    "__version__",
    "check_json_body",
    "clean_text",
    "parse_record_key",
    "record_key",
]

# The public facade: what the HTTP layer (``api/``) and other programs import.
_EXPORTS = {
    "CDP": "cdp.core",
    "CDPError": "cdp.errors",
    "check_json_body": "cdp.jsonlimits",
    "clean_text": "cdp.textsafe",
    "KeyInfo": "cdp.keys",
    "Page": "cdp.pagination",
    "parse_record_key": "cdp.record_ids",
    "record_key": "cdp.record_ids",
    "Scheduler": "cdp.scheduler",
    "Settings": "cdp.settings",
}


def __getattr__(name: str) -> Any:
    """``from cdp import CDP`` imports the whole platform; ``import cdp.store`` only what it needs
    (the ingest writer process, quick CLI commands)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cdp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
