"""Text for people: control characters from stored data escaped before they reach a terminal or a log.

An event name holding NUL, ESC (terminal escape sequences) or right-to-left overrides would otherwise reach the
screen raw: ``clean`` shows each as ``\\xNN`` / ``\\uNNNN`` and leaves every other character as it is.
"""

from __future__ import annotations

import re

# C0 and C1 controls (tab and newline too: one record, one line), DEL, and the bidirectional and invisible
# formatting characters that reorder or hide text on screen.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """``text`` with every control or bidi-formatting character escaped (``"a\\x00b"`` for a NUL)."""
    return _UNSAFE.sub(_escape, text)


clean = clean_text
