"""cdp: an embedded customer data platform."""

from cdp.core import CDP
from cdp.errors import CDPError
from cdp.settings import Settings

__version__ = "0.1.0"
__all__ = ["CDP", "CDPError", "Settings", "__version__"]
