"""Normalisers shared by events and CRM records.

Each returns the normalised value, or ``None`` when the input is unusable; the caller
records a data-quality flag when a non-empty input normalised to ``None``.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

import phonenumbers

_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]{2,}$")
_SPACES = re.compile(r"\s+")
_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for m in names
}
_ISO_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?$")
_SLASH_DATE = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_WORD_DATE_DMY = re.compile(r"^(\d{1,2})\s+([A-Za-z]+)\.?,?\s+(\d{4})$")
_WORD_DATE_MDY = re.compile(r"^([A-Za-z]+)\.?\s+(\d{1,2}),?\s+(\d{4})$")

_COUNTRIES = {
    "us": "US",
    "usa": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states": "US",
    "united states of america": "US",
    "america": "US",
    "gb": "GB",
    "uk": "GB",
    "u.k.": "GB",
    "united kingdom": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "ca": "CA",
    "canada": "CA",
    "de": "DE",
    "germany": "DE",
    "deutschland": "DE",
    "fr": "FR",
    "france": "FR",
    "es": "ES",
    "spain": "ES",
    "españa": "ES",
    "ie": "IE",
    "ireland": "IE",
    "au": "AU",
    "australia": "AU",
    "nl": "NL",
    "netherlands": "NL",
    "the netherlands": "NL",
    "it": "IT",
    "italy": "IT",
    "mx": "MX",
    "mexico": "MX",
    "in": "IN",
    "india": "IN",
}


def _text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, date):  # datetime too (Parquet and JSON readers may hand us these)
        value = value.isoformat()
    elif isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = _SPACES.sub(" ", value).strip()
    return value or None


def is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def email(value: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    text = text.lower().removeprefix("mailto:")
    return text if _EMAIL.match(text) else None


@lru_cache(maxsize=65_536)
def _phone(text: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone(value: object, region: str = "US") -> str | None:
    """E.164 (``+14155550134``); numbers without ``+country`` are read in ``region``."""
    text = _text(value)
    if text is None:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    return _phone(text, region.upper())


HISTORICAL_BIRTHDAY = "birthday_historical"
"""The trait that keeps a CRM record's birthday from before 1850: no profile's birthday, but evidence the
matcher compares (genealogy and archive records)."""
HISTORICAL_YEAR = 1000


def _make_date(year: int, month: int, day: int, min_year: int) -> str | None:
    try:
        value = date(year, month, day)
    except ValueError:
        return None
    if not min_year <= value.year <= 2200:
        return None
    return value.isoformat()


def date_iso(value: object, order: str = "MDY", *, min_year: int = 1850) -> str | None:
    """``YYYY-MM-DD`` from ISO, slash (``order`` decides 03/04/1985), dotted and worded dates; years
    before ``min_year`` (default 1850: a living customer's birthday) give None."""
    text = _text(value)
    if text is None:
        return None
    if m := _ISO_DATE.match(text):
        return _make_date(int(m[1]), int(m[2]), int(m[3]), min_year)
    if m := _SLASH_DATE.match(text):
        first, second, year = int(m[1]), int(m[2]), int(m[3])
        if "." in text or order == "DMY":
            first, second = second, first
        return _make_date(year, first, second, min_year)
    if m := _WORD_DATE_DMY.match(text):
        month = _MONTHS.get(m[2].lower())
        return _make_date(int(m[3]), month, int(m[1]), min_year) if month else None
    if m := _WORD_DATE_MDY.match(text):
        month = _MONTHS.get(m[1].lower())
        return _make_date(int(m[3]), month, int(m[2]), min_year) if month else None
    return None


def name(value: object) -> str | None:
    """Whitespace collapsed and trimmed; case kept (the matcher compares case-insensitively)."""
    return _text(value)


def postal_code(value: object) -> str | None:
    text = _text(value)
    return text.upper() if text else None


def country(value: object) -> str | None:
    """ISO 3166 alpha-2 for the names we know; other values kept as written."""
    text = _text(value)
    if text is None:
        return None
    known = _COUNTRIES.get(text.lower())
    if known:
        return known
    return text.upper() if len(text) == 2 and text.isalpha() else text


def text(value: object) -> str | None:
    return _text(value)
