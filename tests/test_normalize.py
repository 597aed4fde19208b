"""Normalisers: examples plus Hypothesis properties (idempotent, never crash, canonical output)."""

from __future__ import annotations

import re
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from cdp import normalize


def test_email_examples() -> None:
    assert normalize.email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalize.email("mailto:a@b.io") == "a@b.io"
    for bad in ("jane@", "@x.com", "no-at-sign", "a@b", "a b@c.com", "", None, 42, True):
        assert normalize.email(bad) is None


@given(st.emails())
def test_email_valid_addresses_normalise_idempotently(address: str) -> None:
    once = normalize.email(f"  {address.upper()}  ")
    if once is not None:
        assert once == once.strip().lower()
        assert normalize.email(once) == once


@given(st.text())
def test_email_never_raises(text: str) -> None:
    result = normalize.email(text)
    assert result is None or "@" in result


def test_phone_examples() -> None:
    assert normalize.phone("(415) 555-0134") == "+14155550134"
    assert normalize.phone("415.555.0134") == "+14155550134"
    assert normalize.phone("+1 415 555 0134") == "+14155550134"
    assert normalize.phone("+44 7700 900123") == "+447700900123"
    assert normalize.phone("0044 7700 900123") == "+447700900123"
    assert normalize.phone("07700 900123", "GB") == "+447700900123"
    for bad in ("12", "not a phone", "", None):
        assert normalize.phone(bad) is None


@given(st.integers(min_value=200, max_value=999), st.integers(min_value=0, max_value=9999))
def test_phone_us_formats_agree(area: int, line: int) -> None:
    forms = [f"({area}) 555-{line:04d}", f"{area}.555.{line:04d}", f"+1 {area} 555 {line:04d}"]
    results = {normalize.phone(f) for f in forms}
    assert len(results) == 1
    (value,) = results
    if value is not None:
        assert re.fullmatch(r"\+1\d{10}", value)
        assert normalize.phone(value) == value


@given(st.text())
def test_phone_never_raises(text: str) -> None:
    result = normalize.phone(text)
    assert result is None or result.startswith("+")


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_dates_round_trip_in_every_format(day: date) -> None:
    iso = day.isoformat()
    assert normalize.date_iso(iso) == iso
    assert normalize.date_iso(f"{day.month:02d}/{day.day:02d}/{day.year}", "MDY") == iso
    assert normalize.date_iso(f"{day.day:02d}/{day.month:02d}/{day.year}", "DMY") == iso
    assert normalize.date_iso(f"{day.day}.{day.month}.{day.year}") == iso
    assert normalize.date_iso(day.strftime("%d %b %Y")) == iso
    assert normalize.date_iso(day.strftime("%B %d, %Y")) == iso
    assert normalize.date_iso(f"{iso}T10:00:00Z") == iso


def test_invalid_dates() -> None:
    for bad in ("31/02/1990", "2020-13-01", "yesterday", "02/30/2000", "", None):
        assert normalize.date_iso(bad) is None


@given(st.text())
def test_date_never_raises(text: str) -> None:
    result = normalize.date_iso(text)
    assert result is None or re.fullmatch(r"\d{4}-\d{2}-\d{2}", result)


def test_country_postcode_and_names() -> None:
    assert normalize.country("United Kingdom") == "GB"
    assert normalize.country("usa") == "US"
    assert normalize.country("fr") == "FR"
    assert normalize.country("Narnia") == "Narnia"
    assert normalize.postal_code(" sw1a  1aa ") == "SW1A 1AA"
    assert normalize.name("  Mary   Ann ") == "Mary Ann"
    assert normalize.name("   ") is None
