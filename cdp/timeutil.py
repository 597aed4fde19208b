"""Times are stored as fixed-width ISO-8601 UTC strings (``2026-11-23T18:45:00.123Z``) so they sort as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dateutil import parser as _dateutil_parser


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime on the ingest path
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def now_iso() -> str:
    return format_ts(utcnow())


def parse_ts(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string with any offset (naive means UTC); None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = _dateutil_parser.isoparse(text)
        except (ValueError, OverflowError):
            return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"48h"``, ``"30d"``, ``"2w"`` as a timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"duration {text!r} must be an integer followed by one of m, h, d, w (e.g. '30d')")
    return timedelta(**{units[text[-1]]: int(text[:-1])})
