"""Cleaning match rows for probabilistic matching (see `cdp.identity.matching`).

Everything is vectorised with pandas' Arrow-backed strings (``pyarrow.compute`` kernels) and runs
once per distinct value, so a million rows take a few seconds.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cdp.errors import CDPError
from cdp.identity import names

FIELDS: tuple[str, ...] = (
    "unique_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birthday",
    "address_street",
    "address_city",
    "address_postal_code",
    "address_country",
    "company",
    "title",
)
"""The canonical match-row columns (``unique_id`` first). Any but ``unique_id`` may be null or absent.

Match rows may also carry *extra* columns named ``x_<trait>`` (any other trait the user mapped: gender,
birth place, occupation ...): `prepare` cleans them like names and keeps them, and a model compares
those that are informative (`cdp.identity.matching.spec.usable_extras`). A ``full_name`` column fills
first and last name where both are missing (split with ``nameparser``)."""

EXTRA_PREFIX = "x_"
"""Match-row columns with this prefix are extra traits to compare."""

MIN_BIRTH_YEAR = 1000
"""Birthdays before this year are taken as junk. Older ones are kept for matching: genealogy and
historical records hold real birthdays before 1900 (a profile trait keeps its own, stricter, floor)."""

DERIVED: tuple[str, ...] = (
    "email_user",
    "email_domain",
    "email_digits",
    "address_number",
    "first_name_nicknames",
    "first_name_known",
    "first_initial",
    "full_name_blockable",
    "initial_blockable",
)
"""Columns `prepare` adds: the email local part (``+tag`` removed, dots removed for Gmail) and domain,
the first number of the street address (the house number; used for blocking only), the known names
related to the first name as nickname or formal form, also through a corrected typo or as a short form
(`cdp.identity.names.related_names`), each between bars (bob -> ``|bobby|rob|robert|...|``, thoams ->
``|thomas|tom|...|``; null for a name without any), ``first_name_known`` (``'1'`` for a first name the
name lists know), and ``full_name_blockable``
(see `mark_common_full_names`)."""

MAX_NAME_BLOCK = 50
"""A (first name, last name) pair held by more than this many of the rows scored together is a common
full name: the first + last name blocking rule skips it (the other rules still apply). At 1M
generated CRM rows the largest full-name block held 2,238 records and the name rule made 35M of 38M
candidate pairs; the blocks above 50 gave 28M pairs and no true match above the threshold. FEBRL3/4
and the sample data have no block above 27."""

INITIAL_BLOCK_FLAG = "initial_blockable"
MAX_INITIAL_BLOCK = MAX_NAME_BLOCK
"""Like `MAX_NAME_BLOCK`, for a last name with a first initial (the rule that pairs Kimberly and Kmiberly
Jackson): a pair held by more than this many rows is not paired on it alone."""

BLOCK_FLAGS: dict[str, tuple[tuple[str, str], int]] = {}
"""Flag column -> (the two key columns it counts, the most rows a key may have to be blockable)."""

NAME_BLOCK_FLAG = "full_name_blockable"
"""``'1'`` when first and last name are both known and the pair is held by at most `MAX_NAME_BLOCK`
rows among those scored together, else null (so the equi-join of the name rule never pairs it)."""

BLOCK_FLAGS.update(
    {NAME_BLOCK_FLAG: (("first_name", "last_name"), MAX_NAME_BLOCK),
     INITIAL_BLOCK_FLAG: (("first_initial", "last_name"), MAX_INITIAL_BLOCK)}
)  # fmt: skip

STRING = pd.StringDtype("pyarrow")
"""The dtype of every prepared column (nulls are ``pd.NA``)."""


class MatchingError(CDPError):
    """Matching cannot proceed; the message says what to change."""

    code = "matching_failed"


_JUNK_NAMES = [
    "unknown", "none", "null", "nil", "n a", "test", "xxx", "noname", "no name", "not known", "not provided",
    "tbd", "tba", "anonymous", "customer", "user", "firstname", "lastname", "first name", "last name",
]  # fmt: skip
_TITLES = "mr|mrs|ms|miss|mx|dr|prof|sir|dame|rev|fr"
_STREET_WORDS = {
    "street": "st str", "road": "rd", "avenue": "ave av", "drive": "dr drv", "lane": "ln", "court": "ct crt",
    "place": "pl", "crescent": "cres cr crs", "boulevard": "blvd bvd", "highway": "hwy", "parade": "pde",
    "terrace": "tce terr", "circuit": "cct", "close": "cl", "square": "sq", "parkway": "pkwy pky",
    "circle": "cir", "esplanade": "esp", "grove": "gr", "gardens": "gdns", "mount": "mt",
    "apartment": "apt", "suite": "ste", "floor": "fl", "heights": "hts", "way": "wy", "north": "n",
    "south": "s", "east": "e", "west": "w", "northeast": "ne", "northwest": "nw", "southeast": "se",
    "southwest": "sw",
}  # fmt: skip
_ABBREVIATIONS = {abbr: word for word, abbrs in _STREET_WORDS.items() for abbr in abbrs.split()}
_ABBR_KEYS = pa.array(list(_ABBREVIATIONS))
_ABBR_VALUES = pa.array(list(_ABBREVIATIONS.values()))
_JUNK_EMAIL_USERS = [
    "noreply", "no-reply", "donotreply", "do-not-reply", "test", "none", "noemail", "nomail", "null",
    "unknown", "na", "n/a", "example", "email", "abc", "asdf",
]  # fmt: skip
_JUNK_EMAIL_DOMAINS = ["example.com", "example.org", "test.com", "none.com", "noemail.com", "invalid"]
_GMAIL = ["gmail.com", "googlemail.com"]
_PLACEHOLDER_BIRTHDAYS = ["1900-01-01", "1901-01-01", "1970-01-01"]
_COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
        "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "\u0131": "i",
        "\u2019": "'", "\u2018": "'", "`": "'",
    }
)  # fmt: skip


# ------------------------------------------------------------------------------------------ helpers
def _null_if(array: pa.Array, mask: pa.Array) -> pa.Array:
    """``array`` with nulls where ``mask`` is true (a null mask counts as false)."""
    return pc.if_else(pc.fill_null(mask, False), pa.scalar(None, array.type), array)


def _empty_to_null(array: pa.Array) -> pa.Array:
    return _null_if(array, pc.equal(array, ""))


def to_arrow_strings(series: pd.Series) -> pa.Array:
    """Any input column -> Arrow strings, stripped; whole-number floats lose their ``.0``."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(values)
        if finite.any() and np.all(np.mod(values[finite], 1) == 0):
            series = pd.Series(pd.array(values, dtype="Float64").astype("Int64"))
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = series.dt.strftime("%Y-%m-%d")
    try:
        array = pa.array(series, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array(series.map(lambda v: None if pd.isna(v) else str(v)), type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return _empty_to_null(pc.utf8_trim_whitespace(array))


def _fold(array: pa.Array) -> pa.Array:
    """Lower-case ASCII: transliterate (ß -> ss ...) and strip accents; only non-ASCII values go through Python."""
    lower = pc.utf8_lower(array)
    non_ascii = pc.fill_null(pc.match_substring_regex(lower, r"[^\x00-\x7f]"), False)
    if not pc.any(non_ascii).as_py():
        return lower
    folded = [
        unicodedata.normalize("NFKD", v.translate(_TRANSLITERATE)).encode("ascii", "ignore").decode("ascii").lower()
        for v in pc.filter(lower, non_ascii).to_pylist()
    ]
    return pc.replace_with_mask(lower, non_ascii, pa.array(folded, pa.string()))


def _squash(array: pa.Array) -> pa.Array:
    """Collapse runs of spaces and trim; empty -> null."""
    return _empty_to_null(pc.utf8_trim_whitespace(pc.replace_substring_regex(array, r"\s+", " ")))


def _words(array: pa.Array) -> pa.Array:
    """Fold, drop apostrophes, other punctuation -> space."""
    array = pc.replace_substring(_fold(array), "'", "")
    return pc.replace_substring_regex(array, r"[^a-z0-9]+", " ")


def _map_tokens(array: pa.Array, keys: pa.Array, values: pa.Array) -> pa.Array:
    """Replace whole space-separated tokens found in ``keys`` by the matching ``values``."""
    tokens = pc.split_pattern(pc.fill_null(array, ""), " ")
    flat = pc.list_flatten(tokens)
    index = pc.index_in(flat, value_set=keys)
    mapped = pc.if_else(pc.is_null(index), flat, pc.take(values, index))
    rebuilt = pa.ListArray.from_arrays(tokens.offsets, mapped)
    return _null_if(pc.binary_join(rebuilt, " "), pc.is_null(array))


# ------------------------------------------------------------------------------------------ cleaners
def _nicknames(first_names: pa.Array) -> pa.Array:
    """``|name|name|...|``: the names related to each (cleaned) first name; null for none."""
    related = (names.related_names(name) if name else () for name in first_names.to_pylist())
    return pa.array([f"|{'|'.join(sorted(r))}|" if r else None for r in related], pa.string())


def _clean_name(array: pa.Array, *, titles: bool) -> pa.Array:
    array = pc.replace_substring_regex(_words(array), r"[0-9]+", " ")
    array = pc.utf8_trim_whitespace(pc.replace_substring_regex(array, r"\s+", " "))
    if titles:
        array = pc.replace_substring_regex(array, rf"^(?:{_TITLES}) (\S)", r"\1")
    array = _empty_to_null(array)
    return _null_if(array, pc.is_in(array, value_set=pa.array(_JUNK_NAMES)))


def _clean_text(array: pa.Array) -> pa.Array:
    """Free text (company, job title, extra traits): folded, punctuation -> space, digits kept."""
    array = _squash(_words(array))
    return _null_if(array, pc.is_in(array, value_set=pa.array(_JUNK_NAMES)))


def _clean_street(array: pa.Array) -> pa.Array:
    array = _squash(_map_tokens(_squash(_words(array)), _ABBR_KEYS, _ABBR_VALUES))
    return _null_if(array, pc.invert(pc.match_substring_regex(array, "[a-z]{2}")))


def _clean_phone(array: pa.Array) -> pa.Array:
    digits = pc.replace_substring_regex(array, r"[^0-9]", "")
    repeated = pc.match_substring_regex(digits, "^(" + "|".join(f"{d}+" for d in range(10)) + ")$")
    bad = pc.or_(pc.or_(pc.less(pc.utf8_length(digits), 7), repeated), pc.match_substring(digits, "1234567"))
    return _null_if(digits, bad)


def _clean_postcode(array: pa.Array) -> pa.Array:
    array = pc.replace_substring_regex(pc.utf8_upper(_fold(array)), r"[^A-Z0-9]", "")
    return _null_if(_empty_to_null(array), pc.match_substring_regex(array, "^0+$"))


def _clean_country(array: pa.Array) -> pa.Array:
    array = pc.replace_substring_regex(pc.utf8_upper(_fold(array)), r"[^A-Z]", "")
    array = _map_tokens(array, pa.array(list(_COUNTRY_ALIASES)), pa.array(list(_COUNTRY_ALIASES.values())))
    return _null_if(array, pc.not_equal(pc.utf8_length(array), 2))


def _clean_birthday(array: pa.Array) -> pa.Array:
    text = pc.utf8_slice_codeunits(array, 0, 10)
    text = pc.replace_substring_regex(text, r"^(\d{4})(\d{2})(\d{2})$", r"\1-\2-\3")
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
    iso = pc.strftime(parsed, format="%Y-%m-%d")
    this_year = pd.Timestamp.now(tz="UTC").year
    year = pc.year(parsed)
    bad = pc.or_(pc.or_(pc.not_equal(iso, text), pc.less(year, MIN_BIRTH_YEAR)), pc.greater(year, this_year))
    bad = pc.or_(bad, pc.is_in(iso, value_set=pa.array(_PLACEHOLDER_BIRTHDAYS)))
    return _null_if(iso, bad)


_PLAIN_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['-])*")


@functools.cache
def _special_words() -> frozenset[str]:
    from nameparser.config import CONSTANTS

    sets = ("titles", "suffix_acronyms", "suffix_not_acronyms", "prefixes", "conjunctions", "first_name_titles")
    return frozenset(word.lower() for name in sets for word in getattr(CONSTANTS, name))


def simple_split(full_name: str) -> tuple[str, str] | None:
    """``(given, family)`` of a full name of exactly two plain words (letters, apostrophes, hyphens), as
    "Given Family" or "Family, Given", neither of which nameparser knows as a title, suffix, prefix or
    conjunction -- nameparser's own answer for such a name; ``None`` for every other name (nameparser
    splits those)."""
    family_first = full_name.count(",") == 1
    words = full_name.replace(",", " ").split() if family_first else full_name.split()
    if len(words) != 2 or not all(_PLAIN_WORD.fullmatch(w) for w in words):
        return None
    if family_first and not all(part.strip() for part in full_name.split(",")):
        return None
    special = _special_words()
    if any(w.lower() in special for w in words):
        return None
    return (words[1], words[0]) if family_first else (words[0], words[1])


def _parse(name: Any) -> tuple[str | None, str | None]:
    return name.first or None, name.last or None


def _fill_from_full_name(first: pa.Array, last: pa.Array, full: pa.Array) -> tuple[pa.Array, pa.Array]:
    """First and last name parsed from ``full`` (``nameparser``) where they are missing."""
    pick = pc.and_(pc.or_(pc.is_null(first), pc.is_null(last)), pc.is_valid(full))
    if not pc.any(pick).as_py():
        return first, last
    from nameparser import HumanName  # only when a full-name column has to be split

    # Each distinct full name is split once; "Given Family" with no word nameparser treats specially is split
    # at the space (what nameparser answers, at a hundredth of its 0.2 ms a name), the rest by nameparser.
    indices, names = _distinct(pc.filter(full, pick))
    split = [simple_split(v) or _parse(HumanName(v)) for v in names.to_pylist()]
    firsts = pc.take(_clean_name(pa.array([f for f, _ in split], pa.string()), titles=True), indices)
    lasts = pc.take(_clean_name(pa.array([la for _, la in split], pa.string()), titles=False), indices)
    return (
        pc.coalesce(first, pc.replace_with_mask(pa.nulls(len(first), pa.string()), pick, firsts)),
        pc.coalesce(last, pc.replace_with_mask(pa.nulls(len(last), pa.string()), pick, lasts)),
    )


def _split_email(array: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Emails -> (canonical email, user, domain); nulls where not a usable address."""
    text = pc.utf8_lower(array)
    valid = pc.match_substring_regex(text, r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    parts = pc.extract_regex(_null_if(text, pc.invert(valid)), r"^(?P<user>[^@+]*)[^@]*@(?P<domain>[^@]+)$")
    user, domain = pc.struct_field(parts, "user"), pc.struct_field(parts, "domain")
    gmail = pc.is_in(domain, value_set=pa.array(_GMAIL))
    domain = pc.if_else(gmail, "gmail.com", domain)
    user = pc.if_else(gmail, pc.replace_substring(user, ".", ""), user)
    junk = pc.or_(
        pc.or_(pc.equal(user, ""), pc.is_in(user, value_set=pa.array(_JUNK_EMAIL_USERS))),
        pc.is_in(domain, value_set=pa.array(_JUNK_EMAIL_DOMAINS)),
    )
    user, domain = _null_if(user, junk), _null_if(domain, junk)
    return pc.binary_join_element_wise(user, domain, "@"), user, domain


# ------------------------------------------------------------------------------------------ prepare
def _series(array: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([array], pa.string())), dtype=STRING)


def _distinct(array: pa.Array) -> tuple[pa.Array, pa.Array]:
    encoded = pc.dictionary_encode(array)
    return encoded.indices, encoded.dictionary


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Clean match rows for matching; returns a new frame with `FIELDS` + `DERIVED` (+ ``source``).

    All columns have the Arrow-backed `STRING` dtype (nulls are ``pd.NA``).

    - names and city: ASCII lower case (accents stripped, ``ß`` -> ``ss`` ...), apostrophes dropped,
      other punctuation -> space, spaces collapsed, digits dropped; leading titles (Mr, Dr ...) dropped
      from first names (suffixes such as Jr are kept: they tell father and son apart); placeholders
      ("unknown") -> null;
    - email: lower case, ``+tag`` removed, dots removed for Gmail, placeholder addresses -> null;
      ``email_user`` / ``email_domain`` hold the two halves;
    - phone: digits only (E.164 without ``+``); fewer than 7 digits or ``0000000``-like -> null;
    - birthday: ISO ``YYYY-MM-DD`` (``YYYYMMDD`` accepted); invalid, before `MIN_BIRTH_YEAR`, in the
      future or a known placeholder (1900-01-01, 1901-01-01, 1970-01-01) -> null;
    - street: like names (digits kept), common abbreviations unified (st -> street, rd -> road,
      ave -> avenue, ...); without two letters in a row (just a house number) -> null;
      ``address_number`` is its first number;
    - postal code: upper case, letters and digits only; country: ISO-2 upper case (UK -> GB);
    - company, title and extra ``x_*`` columns: like names;
    - ``full_name`` (optional): split into first and last name where both are missing.

    Missing columns are added as null. Work is done once per distinct value.
    Raises `MatchingError` if ``unique_id`` is missing, null or duplicated.
    """
    if "unique_id" not in df.columns:
        raise MatchingError("Match rows need a 'unique_id' column (one unique string per row).")
    n = len(df)
    ids = to_arrow_strings(df["unique_id"].reset_index(drop=True))
    if ids.null_count:
        raise MatchingError("Match rows have a null or empty unique_id; every row needs one.")
    if pc.count_distinct(ids).as_py() != n:
        counts = pc.value_counts(ids)
        dupes = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))[:3].to_pylist()
        raise MatchingError(f"unique_id must be unique; repeated values include {dupes}.")

    def raw(name: str) -> pa.Array:
        if name in df.columns:
            return to_arrow_strings(df[name].reset_index(drop=True))
        return pa.nulls(n, pa.string())

    def clean(name: str, cleaner: object) -> pa.Array:
        indices, values = _distinct(raw(name))
        return pc.take(cleaner(values), indices)  # type: ignore[operator]

    out: dict[str, pa.Array] = {"unique_id": ids}
    out["first_name"] = clean("first_name", lambda a: _clean_name(a, titles=True))
    out["last_name"] = clean("last_name", lambda a: _clean_name(a, titles=False))
    indices, values = _distinct(raw("email"))
    email, user, domain = _split_email(values)
    out["email"] = pc.take(email, indices)
    out["phone"] = clean("phone", _clean_phone)
    out["birthday"] = clean("birthday", _clean_birthday)
    out["address_street"] = clean("address_street", _clean_street)
    out["address_city"] = clean("address_city", lambda a: _clean_name(a, titles=False))
    out["address_postal_code"] = clean("address_postal_code", _clean_postcode)
    out["address_country"] = clean("address_country", _clean_country)
    out["company"] = clean("company", _clean_text)
    out["title"] = clean("title", _clean_text)
    if "full_name" in df.columns:
        out["first_name"], out["last_name"] = _fill_from_full_name(
            out["first_name"], out["last_name"], raw("full_name")
        )
    out["email_user"] = pc.take(user, indices)
    out["email_domain"] = pc.take(domain, indices)
    out["email_digits"] = _empty_to_null(pc.replace_substring_regex(out["email_user"], r"[^0-9]", ""))
    street_number = pc.struct_field(pc.extract_regex(out["address_street"], r"(?P<n>\d+)"), "n")
    out["address_number"] = street_number
    indices, values = _distinct(out["first_name"])
    out["first_name_nicknames"] = pc.take(_nicknames(values), indices)
    known = pa.array(["1" if v and names.is_known(v) else None for v in values.to_pylist()], pa.string())
    out["first_name_known"] = pc.take(known, indices)
    out["first_initial"] = pc.utf8_slice_codeunits(out["first_name"], 0, 1)
    for flag in BLOCK_FLAGS:
        out[flag] = pa.nulls(n, pa.string())
    if "source" in df.columns:
        out["source"] = raw("source")
    for column in sorted(c for c in df.columns if isinstance(c, str) and c.startswith(EXTRA_PREFIX)):
        out[column] = clean(column, _clean_text)
    frame = pd.DataFrame({name: _series(array) for name, array in out.items()})
    frame.attrs["cdp_prepared"] = True
    return mark_common_full_names(frame)


def mark_common_full_names(prepared: pd.DataFrame) -> pd.DataFrame:
    """``prepared`` with the `BLOCK_FLAGS` (`NAME_BLOCK_FLAG`, `INITIAL_BLOCK_FLAG`) counted over its own rows
    (a copy; the input is unchanged).

    The count must cover every row that is scored together: `prepare` and `cdp.identity.matching.predict`
    count over all their rows, real-time scoring recounts over the cached rows plus the new ones.
    """
    out = prepared.copy(deep=False)
    for flag, ((a, b), limit) in BLOCK_FLAGS.items():
        sizes = prepared[[a, b]].groupby([a, b], dropna=True, sort=False)[a].transform("size")
        blockable = sizes.notna() & (sizes.fillna(limit + 1) <= limit)
        out[flag] = pd.Series(pd.NA, index=prepared.index, dtype=STRING).mask(blockable.to_numpy(), "1")
    out.attrs = dict(prepared.attrs)
    return out


def is_prepared(df: pd.DataFrame) -> bool:
    """True for the output of `prepare` (so it need not be cleaned again)."""
    return bool(df.attrs.get("cdp_prepared")) and all(c in df.columns for c in (*FIELDS, *DERIVED))


def ensure_prepared(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` if it is already prepared, else ``prepare(df)``."""
    return df if is_prepared(df) else prepare(df)
