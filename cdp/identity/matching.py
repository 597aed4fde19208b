"""Probabilistic record matching (Fellegi-Sunter, via Splink 5 on DuckDB).

Deterministic rules (same email, phone or user id) live elsewhere; this module finds the fuzzy links
between "match rows" -- one row per CRM contact or identified web user -- and scores them so that the
clustering step can merge them and the UI can explain why.

Pipeline::

    model = train(rows)                      # unsupervised: prior, u by sampling, m by EM
    edges = predict(model, rows)             # all pairs within rows at/above model.threshold
    edges = predict_between(model, new, existing)   # micro-batches against what is already known
    why = explain_pair(model, left_row, right_row)  # the waterfall for one pair

Match rows are a pandas DataFrame with the columns of `FIELDS` (any may be null or absent);
`prepare` cleans them. Output edges have the columns ``unique_id_l``, ``unique_id_r`` (``l < r``),
``match_weight``, ``match_probability`` and one ``mw_<comparison>`` column per comparison holding its
partial match weight (log2 Bayes factor, term-frequency adjustment included), so that
``match_weight == prior_weight + sum(mw_*)``. The comparison names (see `COMPARISON_COLUMNS`) are
``first_name``, ``last_name``, ``email``, ``phone``, ``birthday``, ``address_postal_code``,
``address_city``, ``address_street`` and ``address_country``; a model only has those whose fields
were filled in its training data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import splink
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator
from splink.blocking_rule_library import CustomRule, block_on
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.comparison_creator import ComparisonCreator
from splink.internals.database_api import DatabaseAPISubClass
from splink.internals.exceptions import SplinkException
from splink.internals.splink_dataframe import SplinkDataFrame

from cdp.errors import CDPError

__all__ = [
    "COMPARISON_COLUMNS",
    "DEFAULT_THRESHOLD",
    "FIELDS",
    "MIN_TRAINING_ROWS",
    "MatchIndex",
    "MatchModel",
    "MatchingError",
    "blocking_rules",
    "choose_comparisons",
    "explain_pair",
    "predict",
    "predict_between",
    "prepare",
    "train",
]

logger = logging.getLogger(__name__)

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
)
"""The canonical match-row columns (``unique_id`` first). Any but ``unique_id`` may be null or absent."""

DERIVED: tuple[str, ...] = ("email_user", "email_domain", "address_number")
"""Columns `prepare` adds: the email local part (``+tag`` removed, dots removed for Gmail) and domain, and
the first number in the street address (house number; used for blocking only)."""

COMPARISON_COLUMNS: dict[str, tuple[str, ...]] = {
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "email": ("email",),
    "phone": ("phone",),
    "birthday": ("birthday",),
    "address_postal_code": ("address_postal_code",),
    "address_city": ("address_city",),
    "address_street": ("address_street",),
    "address_country": ("address_country",),
}
"""Comparison (output column) name -> the prepared columns it reads. Output weights are ``mw_<name>``."""

DEFAULT_THRESHOLD = 0.999
"""Match probability at/above which a pair is a link. Precision first: see the module README in train()."""

MIN_TRAINING_ROWS = 1000
"""Fewer rows than this give too few random pairs for u and too few duplicates for EM to converge."""

MIN_FILL = 0.05
"""A field is used only when at least this share of rows has a value (and it has >= 2 distinct values)."""

PRIOR_RECALL = 0.6
"""Assumed share of true links that the deterministic prior rules (exact email / phone / name+birthday) find."""

EM_MAX_PAIRS = 2e6
"""EM trains on at most about this many blocked pairs per rule (deterministic hash sample of the rows)."""

TF_TOP_K = 1000
"""Term frequencies stored in the model: at most this many of the most frequent values per column."""

Backend = Literal["duckdb", "spark"]


class MatchingError(CDPError):
    """Matching cannot proceed; the message says what to change."""

    code = "matching_failed"


# ============================================================================================ model
@dataclass(frozen=True)
class MatchModel:
    """A trained matching model: everything needed to score new rows without retraining.

    ``settings`` is Splink's model JSON (``linker.misc.save_model_to_json()``, minus the random
    ``linker_uid``); ``term_frequencies`` maps each term-frequency-adjusted column to its most
    frequent values and their relative frequency in the training data (rarer values are scored with
    the comparison level's average weight, which is the conservative choice).
    """

    settings: dict[str, Any]
    fields: tuple[str, ...]
    threshold: float
    trained_rows: int
    metrics: dict[str, Any]
    term_frequencies: dict[str, dict[str, float]] = field(default_factory=dict)

    FORMAT = 1

    def to_json(self) -> str:
        """Serialise to a JSON string (stable key order, so equal models give equal strings)."""
        body = {
            "format": self.FORMAT,
            "settings": self.settings,
            "fields": list(self.fields),
            "threshold": self.threshold,
            "trained_rows": self.trained_rows,
            "metrics": self.metrics,
            "term_frequencies": self.term_frequencies,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> MatchModel:
        """Load a model written by `to_json`; raises `MatchingError` if the text is not one."""
        try:
            body = json.loads(text)
            if body.get("format") != cls.FORMAT:
                raise MatchingError(
                    f"Unsupported match model format {body.get('format')!r} (expected {cls.FORMAT}); retrain the model."
                )
            return cls(
                settings=dict(body["settings"]),
                fields=tuple(body["fields"]),
                threshold=float(body["threshold"]),
                trained_rows=int(body["trained_rows"]),
                metrics=dict(body["metrics"]),
                term_frequencies={k: dict(v) for k, v in body.get("term_frequencies", {}).items()},
            )
        except MatchingError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MatchingError(f"Not a match model JSON document: {exc}. Pass the output of MatchModel.to_json().") from exc

    @property
    def comparisons(self) -> tuple[str, ...]:
        """Comparison names, in model order (the ``mw_<name>`` output columns)."""
        return tuple(str(c["output_column_name"]) for c in self.settings["comparisons"])

    @property
    def prior(self) -> float:
        """Probability that two random records match (lambda)."""
        return float(self.settings["probability_two_random_records_match"])

    @property
    def prior_weight(self) -> float:
        """The prior as a match weight: log2(lambda / (1 - lambda))."""
        return _prob_to_weight(self.prior)

    def fingerprint(self) -> str:
        """A short hash of the model JSON (cache key)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def _prob_to_weight(p: float) -> float:
    return math.log2(p / (1.0 - p))


# ============================================================================================ prepare
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
        "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ı": "i", "’": "'", "‘": "'", "`": "'",
    }
)  # fmt: skip
_JUNK_NAMES = frozenset(
    {"unknown", "none", "null", "nil", "n a", "test", "xxx", "noname", "no name", "not known", "not provided",
     "tbd", "tba", "anonymous", "customer", "user", "firstname", "lastname", "first name", "last name"}
)  # fmt: skip
_TITLES = r"(?:mr|mrs|ms|miss|mx|dr|prof|sir|dame|rev|fr)"
_SUFFIXES = r"(?:jr|sr|ii|iii|iv|phd|md|esq)"
_STREET_ABBREVIATIONS = {
    "st": "street", "str": "street", "rd": "road", "ave": "avenue", "av": "avenue", "dr": "drive",
    "drv": "drive", "ln": "lane", "ct": "court", "crt": "court", "pl": "place", "cres": "crescent",
    "cr": "crescent", "crs": "crescent", "blvd": "boulevard", "bvd": "boulevard", "hwy": "highway",
    "pde": "parade", "tce": "terrace", "terr": "terrace", "cct": "circuit", "cl": "close", "sq": "square",
    "pkwy": "parkway", "pky": "parkway", "cir": "circle", "esp": "esplanade", "gr": "grove", "gdns": "gardens",
    "mt": "mount", "apt": "apartment", "ste": "suite", "fl": "floor", "hts": "heights", "wy": "way",
    "n": "north", "s": "south", "e": "east", "w": "west", "ne": "northeast", "nw": "northwest",
    "se": "southeast", "sw": "southwest",
}  # fmt: skip
_STREET_RE = re.compile(r"\b(" + "|".join(sorted(_STREET_ABBREVIATIONS, key=len, reverse=True)) + r")\b")
_JUNK_EMAIL_USERS = frozenset(
    {"noreply", "no-reply", "donotreply", "do-not-reply", "test", "none", "noemail", "nomail", "null",
     "unknown", "na", "n/a", "example", "email", "abc", "asdf"}
)  # fmt: skip
_JUNK_EMAIL_DOMAINS = frozenset({"example.com", "example.org", "test.com", "none.com", "noemail.com", "invalid"})
_GMAIL = frozenset({"gmail.com", "googlemail.com"})
_PLACEHOLDER_BIRTHDAYS = frozenset({"1900-01-01", "1901-01-01", "1970-01-01"})
_COUNTRY_ALIASES = {"UK": "GB", "EL": "GR"}


def _as_text(series: pd.Series) -> pd.Series:
    """Object series of stripped strings or None; whole-number floats lose their ``.0``."""
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(values)
        if finite.any() and np.all(np.mod(values[finite], 1) == 0):
            series = pd.Series(pd.array(values, dtype="Float64").astype("Int64"), index=series.index)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        out = series.dt.strftime("%Y-%m-%d")
        return out.astype(object).where(out.notna(), None)
    return _by_unique(series, lambda u: u.astype(str).str.strip().replace("", None))


def _by_unique(series: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """Apply a vectorised string function to the distinct non-null values only, then broadcast back."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) == 0:
        return pd.Series([None] * len(series), index=series.index, dtype=object)
    cleaned = fn(pd.Series(np.asarray(uniques, dtype=object), dtype=object))
    values = cleaned.astype(object).where(cleaned.notna(), None).to_numpy(dtype=object)
    taken = values[np.where(codes >= 0, codes, 0)]
    taken[codes < 0] = None
    return pd.Series(taken, index=series.index, dtype=object)


def _fold(u: pd.Series) -> pd.Series:
    """Lower-case ASCII: transliterate, strip accents."""
    u = u.str.translate(_TRANSLITERATE).str.normalize("NFKD").str.encode("ascii", "ignore").str.decode("ascii")
    return u.str.lower()


def _clean_words(u: pd.Series) -> pd.Series:
    """Fold, drop apostrophes, turn other punctuation into spaces, collapse spaces; empty -> None."""
    u = _fold(u).str.replace("'", "", regex=False).str.replace(r"[^a-z0-9]+", " ", regex=True).str.strip()
    return u.where(u != "", None)


def _clean_name(u: pd.Series, *, titles: bool, suffixes: bool) -> pd.Series:
    u = _clean_words(u).str.replace(r"\d+", " ", regex=True)
    if titles:
        u = u.str.replace(rf"^{_TITLES} (?=\S)", "", regex=True)
    if suffixes:
        u = u.str.replace(rf"(?<=\S) {_SUFFIXES}$", "", regex=True)
    u = u.str.replace(r"\s+", " ", regex=True).str.strip()
    return u.where((u != "") & ~u.isin(_JUNK_NAMES), None)


def _clean_street(u: pd.Series) -> pd.Series:
    u = _clean_words(u)
    u = u.str.replace(_STREET_RE, lambda m: _STREET_ABBREVIATIONS[m.group(1)], regex=True)
    return u.str.replace(r"\s+", " ", regex=True).str.strip()


def _clean_phone(u: pd.Series) -> pd.Series:
    digits = u.str.replace(r"\D", "", regex=True)
    bad = (digits.str.len() < 7) | digits.str.fullmatch(r"(\d)\1+") | digits.str.contains("1234567", regex=False)
    return digits.where(~bad, None)


def _clean_postcode(u: pd.Series) -> pd.Series:
    u = _fold(u).str.upper().str.replace(r"[^A-Z0-9]", "", regex=True)
    return u.where((u != "") & ~u.str.fullmatch(r"0+"), None)


def _clean_country(u: pd.Series) -> pd.Series:
    u = _fold(u).str.upper().str.replace(r"[^A-Z]", "", regex=True).replace(_COUNTRY_ALIASES)
    return u.where(u.str.len() == 2, None)


def _clean_birthday(u: pd.Series) -> pd.Series:
    text = u.str.strip().str.slice(0, 10)
    compact = text.str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    text = text.where(~compact, text.str.slice(0, 4) + "-" + text.str.slice(4, 6) + "-" + text.str.slice(6, 8))
    iso = text.where(text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").fillna(False).astype(bool), None)
    parsed = pd.to_datetime(iso, format="%Y-%m-%d", errors="coerce")
    this_year = pd.Timestamp.now(tz="UTC").year
    ok = parsed.notna() & (parsed.dt.year >= 1900) & (parsed.dt.year <= this_year)
    out = parsed.dt.strftime("%Y-%m-%d").where(ok, None)
    return out.where(~out.isin(_PLACEHOLDER_BIRTHDAYS), None)


def _split_email(u: pd.Series) -> pd.DataFrame:
    """Distinct raw emails -> canonical email, user and domain (None when not an address)."""
    text = u.str.strip().str.lower()
    valid = text.str.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+").fillna(False).astype(bool)
    parts = text.where(valid, None).str.rsplit("@", n=1, expand=True)
    if parts.shape[1] < 2:
        none = pd.Series([None] * len(u), index=u.index, dtype=object)
        return pd.DataFrame({"email": none, "email_user": none, "email_domain": none})
    user, domain = parts[0].str.split("+", n=1).str[0], parts[1]
    domain = domain.where(~domain.isin(_GMAIL), "gmail.com")
    user = user.where(domain != "gmail.com", user.str.replace(".", "", regex=False))
    ok = valid & (user.str.len() > 0) & ~user.isin(_JUNK_EMAIL_USERS) & ~domain.isin(_JUNK_EMAIL_DOMAINS)
    email = (user + "@" + domain).where(ok, None)
    return pd.DataFrame({"email": email, "email_user": user.where(ok, None), "email_domain": domain.where(ok, None)})


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Clean match rows for matching; returns a new frame with `FIELDS` + `DERIVED` (+ ``source``).

    - names and city: ASCII lower case (accents stripped, ``ß`` -> ``ss`` ...), apostrophes dropped,
      other punctuation -> space, spaces collapsed; leading titles (Mr, Dr ...) dropped from first
      names, trailing suffixes (Jr, III ...) from last names; placeholders ("unknown", "test") -> null;
    - email: lower case, ``+tag`` removed, dots removed for Gmail, placeholder addresses -> null;
      ``email_user`` / ``email_domain`` hold the two halves;
    - phone: digits only (E.164 without ``+``); fewer than 7 digits or ``0000000``-like -> null;
    - birthday: ISO ``YYYY-MM-DD`` (``YYYYMMDD`` accepted); invalid, before 1900, in the future or a
      known placeholder (1900-01-01, 1901-01-01, 1970-01-01) -> null;
    - street: like names, then common abbreviations unified (st -> street, rd -> road, ave -> avenue ...);
    - postal code: upper case, letters and digits only; country: ISO-2 upper case (UK -> GB).

    Missing columns are added as null. Work is done once per distinct value, so 1M rows take seconds.
    Raises `MatchingError` if ``unique_id`` is missing, null or duplicated.
    """
    if "unique_id" not in df.columns:
        raise MatchingError("Match rows need a 'unique_id' column (one unique string per row).")
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    ids = _as_text(df["unique_id"].reset_index(drop=True))
    if ids.isna().any():
        raise MatchingError("Match rows have a null or empty unique_id; every row needs one.")
    if ids.duplicated().any():
        dupes = ids[ids.duplicated()].head(3).tolist()
        raise MatchingError(f"unique_id must be unique; repeated values include {dupes}.")
    out["unique_id"] = ids

    def column(name: str) -> pd.Series:
        if name in df.columns:
            return _as_text(df[name].reset_index(drop=True))
        return pd.Series([None] * len(df), dtype=object)

    out["first_name"] = _by_unique(column("first_name"), lambda u: _clean_name(u, titles=True, suffixes=False))
    out["last_name"] = _by_unique(column("last_name"), lambda u: _clean_name(u, titles=False, suffixes=True))
    email_codes, email_uniques = pd.factorize(column("email"), use_na_sentinel=True)
    emails = _split_email(pd.Series(np.asarray(email_uniques, dtype=object), dtype=object))
    for name in ("email", "email_user", "email_domain"):
        values = emails[name].astype(object).where(emails[name].notna(), None).to_numpy(dtype=object)
        taken = values[np.where(email_codes >= 0, email_codes, 0)] if len(values) else np.full(len(df), None)
        taken[email_codes < 0] = None
        out[name] = pd.Series(taken, dtype=object)
    out["phone"] = _by_unique(column("phone"), _clean_phone)
    out["birthday"] = _by_unique(column("birthday"), _clean_birthday)
    out["address_street"] = _by_unique(column("address_street"), _clean_street)
    out["address_number"] = _by_unique(out["address_street"], lambda u: u.str.extract(r"(\d+)", expand=False))
    out["address_city"] = _by_unique(column("address_city"), lambda u: _clean_name(u, titles=False, suffixes=False))
    out["address_postal_code"] = _by_unique(column("address_postal_code"), _clean_postcode)
    out["address_country"] = _by_unique(column("address_country"), _clean_country)
    if "source" in df.columns:
        out["source"] = _as_text(df["source"].reset_index(drop=True))
    return out[[*FIELDS, *DERIVED, *(["source"] if "source" in out.columns else [])]]


def _ensure_prepared(df: pd.DataFrame) -> pd.DataFrame:
    return df if all(c in df.columns for c in (*FIELDS, *DERIVED)) and df.attrs.get("cdp_prepared") else _mark(prepare(df))


def _mark(df: pd.DataFrame) -> pd.DataFrame:
    df.attrs["cdp_prepared"] = True
    return df


# ============================================================================================ model spec
def _usable(df: pd.DataFrame, column: str) -> bool:
    if column not in df.columns or len(df) == 0:
        return False
    values = df[column]
    return bool(values.notna().mean() >= MIN_FILL and values.nunique(dropna=True) >= 2)


_READS = {"first_name": ("first_name", "last_name"), "last_name": ("first_name", "last_name")}
"""Columns a comparison's SQL reads, where more than its own field (the swapped-names level)."""
_SWAP_LEVEL = "(first_name_l = last_name_r) OR (last_name_l = first_name_r)"


def _name_comparison(column: str) -> ComparisonCreator:
    """Exact (TF), Jaro-Winkler >= 0.92, >= 0.88, first and last name swapped, JW >= 0.7, else."""
    return cl.CustomComparison(
        output_column_name=column,
        comparison_description=f"{column}: exact, Jaro-Winkler >= 0.92, >= 0.88, swapped names, >= 0.7, else",
        comparison_levels=[
            cll.NullLevel(column),
            cll.ExactMatchLevel(column, term_frequency_adjustments=True),
            cll.JaroWinklerLevel(column, 0.92),
            cll.JaroWinklerLevel(column, 0.88),
            cll.CustomLevel(_SWAP_LEVEL, label_for_charts="First and last name swapped"),
            cll.JaroWinklerLevel(column, 0.7),
            cll.ElseLevel(),
        ],
    )


def _phone_comparison() -> ComparisonCreator:
    phone = "phone"
    return cl.CustomComparison(
        output_column_name=phone,
        comparison_description="phone: exact, same last 8 digits, one edit, else",
        comparison_levels=[
            cll.NullLevel(phone),
            cll.ExactMatchLevel(phone, term_frequency_adjustments=True),
            cll.ExactMatchLevel(splink.ColumnExpression(phone).regex_extract("[0-9]{8}$")).configure(
                label_for_charts="Same last 8 digits"
            ),
            cll.DamerauLevenshteinLevel(phone, 1),
            cll.ElseLevel(),
        ],
    )


def _postcode_comparison() -> ComparisonCreator:
    pc = "address_postal_code"
    return cl.CustomComparison(
        output_column_name=pc,
        comparison_description="postal code: exact, one edit, same first 3 characters, else",
        comparison_levels=[
            cll.NullLevel(pc),
            cll.ExactMatchLevel(pc, term_frequency_adjustments=True),
            cll.DamerauLevenshteinLevel(pc, 1),
            cll.ExactMatchLevel(splink.ColumnExpression(pc).substr(1, 3)).configure(
                label_for_charts="Same first 3 characters"
            ),
            cll.ElseLevel(),
        ],
    )


def _city_comparison() -> ComparisonCreator:
    city = "address_city"
    return cl.CustomComparison(
        output_column_name=city,
        comparison_description="city: exact, Jaro-Winkler >= 0.92, >= 0.8, else",
        comparison_levels=[
            cll.NullLevel(city),
            cll.ExactMatchLevel(city, term_frequency_adjustments=True),
            cll.JaroWinklerLevel(city, 0.92),
            cll.JaroWinklerLevel(city, 0.8),
            cll.ElseLevel(),
        ],
    )


def _street_comparison() -> ComparisonCreator:
    street = "address_street"
    return cl.CustomComparison(
        output_column_name=street,
        comparison_description="street: exact, one edit, Jaro-Winkler >= 0.9, >= 0.8, else",
        comparison_levels=[
            cll.NullLevel(street),
            cll.ExactMatchLevel(street),
            cll.DamerauLevenshteinLevel(street, 1),
            cll.JaroWinklerLevel(street, 0.9),
            cll.JaroWinklerLevel(street, 0.8),
            cll.ElseLevel(),
        ],
    )


def choose_comparisons(df: pd.DataFrame) -> list[ComparisonCreator]:
    """Splink comparisons for the fields that are usable in ``df`` (raw or prepared match rows).

    A field is usable when at least `MIN_FILL` of rows have a value and it has two or more distinct
    values. No per-dataset tuning: the same levels everywhere, EM learns their weights.

    ========================  ==========================================================================
    comparison (``mw_`` name)  levels (term-frequency adjusted exact levels marked TF)
    ========================  ==========================================================================
    first_name, last_name     NameComparison: exact (TF), Jaro-Winkler >= 0.92, >= 0.88, >= 0.7, else
    email                     EmailComparison: exact (TF), same user, JW >= 0.88 email, JW >= 0.88 user
    phone                     exact (TF), same last 8 digits, Damerau-Levenshtein <= 1, else
    birthday                  DateOfBirthComparison (input_is_string): exact (TF), one edit,
                              <= 1 month, <= 1 year, <= 10 years, else
    address_postal_code       exact (TF), Damerau-Levenshtein <= 1, same first 3 characters, else
    address_city              exact (TF), Jaro-Winkler >= 0.92, >= 0.8, else
    address_street            exact, Damerau-Levenshtein <= 1, Jaro-Winkler >= 0.9, >= 0.8, else
    address_country           exact, else
    ========================  ==========================================================================
    """
    prepared = _ensure_prepared(df)
    chosen: list[ComparisonCreator] = []
    if _usable(prepared, "first_name"):
        chosen.append(_name_comparison("first_name"))
    if _usable(prepared, "last_name"):
        chosen.append(_name_comparison("last_name"))
    if _usable(prepared, "email"):
        chosen.append(cl.EmailComparison("email"))
    if _usable(prepared, "phone"):
        chosen.append(_phone_comparison())
    if _usable(prepared, "birthday"):
        chosen.append(
            cl.DateOfBirthComparison("birthday", input_is_string=True).configure(term_frequency_adjustments=True)
        )
    if _usable(prepared, "address_postal_code"):
        chosen.append(_postcode_comparison())
    if _usable(prepared, "address_city"):
        chosen.append(_city_comparison())
    if _usable(prepared, "address_street"):
        chosen.append(_street_comparison())
    if _usable(prepared, "address_country"):
        chosen.append(cl.ExactMatch("address_country"))
    return chosen


_PREDICTION_RULES: tuple[tuple[str, ...], ...] = (
    ("email",),
    ("phone",),
    ("first_name", "birthday"),
    ("last_name", "birthday"),
    ("address_postal_code", "last_name"),
    ("address_postal_code", "first_name"),
    ("address_postal_code", "birthday"),
    ("first_name", "last_name"),
    ("swapped_names",),
    ("address_street", "address_postal_code"),
    ("address_number", "address_postal_code"),
    ("birthday", "address_number"),
    ("birthday", "address_city"),
    ("birthday", "last_name_2"),
    ("address_number", "first_name_2", "last_name_2"),
    ("address_street",),
)
"""Blocking keys per rule; a pair is a candidate when it agrees on every key of at least one rule."""

_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "first_name_2": ("substr(first_name, 1, 2)", ("first_name",)),
    "last_name_2": ("substr(last_name, 1, 2)", ("last_name",)),
    "swapped_names": ("", ("first_name", "last_name")),
}
"""Blocking keys that are not plain columns: SQL expression and the columns it needs."""
_SWAPPED_NAMES = "l.first_name = r.last_name and l.last_name = r.first_name"


def _rule_columns(df: pd.DataFrame) -> list[tuple[str, ...]]:
    def usable(key: str) -> bool:
        return all(_usable(df, c) for c in _KEYS.get(key, ("", (key,)))[1])

    return [keys for keys in _PREDICTION_RULES if all(usable(k) for k in keys)]


def _rule(keys: Sequence[str]) -> BlockingRuleCreator:
    if tuple(keys) == ("swapped_names",):
        return CustomRule(_SWAPPED_NAMES)
    return block_on(*(_KEYS[k][0] if k in _KEYS else k for k in keys))


def blocking_rules(df: pd.DataFrame) -> list[BlockingRuleCreator]:
    """Blocking rules for prediction: candidate pairs must agree exactly on one of these column sets.

    Several rules, so that a duplicate with a typo in one field is still compared: email; phone;
    first name + birthday; last name + birthday; postal code + last name; postal code + first name;
    postal code + birthday; first + last name; street + postal code -- those whose columns are usable.
    Every rule is an equi-join, so the number of candidate pairs grows with the block sizes, not n^2.
    """
    prepared = _ensure_prepared(df)
    return [_rule(cols) for cols in _rule_columns(prepared)]


def _training_rules(df: pd.DataFrame, comparison_names: Sequence[str]) -> list[tuple[str, ...]]:
    """EM blocking rules: at least two, so that every comparison is estimated by at least one."""
    candidates: list[tuple[str, ...]] = [
        ("birthday",),
        ("first_name", "last_name"),
        ("email",),
        ("phone",),
        ("address_postal_code", "last_name"),
        ("address_street",),
        ("address_postal_code",),
    ]
    usable = [c for c in candidates if all(_usable(df, col) for col in c)]
    chosen: list[tuple[str, ...]] = []
    uncovered = set(comparison_names)
    for cols in usable:
        trains = {name for name in uncovered if not set(_READS.get(name, COMPARISON_COLUMNS[name])) & set(cols)}
        if trains or len(chosen) < 2:
            chosen.append(cols)
            uncovered -= trains
        if not uncovered and len(chosen) >= 2:
            break
    if uncovered or len(chosen) < 2:
        raise MatchingError(
            "Cannot train: the rows need at least two well-filled identifying fields (e.g. birthday and "
            f"names); comparisons left untrained: {sorted(uncovered)}."
        )
    return chosen


def _deterministic_rules(df: pd.DataFrame) -> list[str]:
    rules: list[str] = []
    if _usable(df, "email"):
        rules.append("l.email = r.email")
    if _usable(df, "phone"):
        rules.append("l.phone = r.phone")
    if all(_usable(df, c) for c in ("first_name", "last_name", "birthday")):
        rules.append("l.first_name = r.first_name and l.last_name = r.last_name and l.birthday = r.birthday")
    return rules


_TF_COLUMNS = ("first_name", "last_name", "email", "phone", "birthday", "address_postal_code", "address_city")


def _choose(df: pd.DataFrame) -> list[tuple[str, ComparisonCreator]]:
    names = [n for n in COMPARISON_COLUMNS if all(_usable(df, c) for c in COMPARISON_COLUMNS[n])]
    return list(zip(names, choose_comparisons(df), strict=True))


# ============================================================================================ backend
_SCHEMA_CACHE: dict[tuple[str, ...], pa.Schema] = {}


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    """All-string Arrow table (so all-null columns still have a type)."""
    cols = tuple(df.columns)
    schema = _SCHEMA_CACHE.get(cols)
    if schema is None:
        schema = _SCHEMA_CACHE.setdefault(cols, pa.schema([(c, pa.string()) for c in cols]))
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


class _Session:
    """One database connection plus the Splink DB API over it."""

    def __init__(self, backend: Backend) -> None:
        if backend == "duckdb":
            self.con: duckdb.DuckDBPyConnection | None = duckdb.connect(":memory:")
            self.db_api: DatabaseAPISubClass = DuckDBAPI(connection=self.con)
        elif backend == "spark":
            self.con = None
            self.db_api = _spark_api()
        else:
            raise MatchingError(f"Unknown backend {backend!r}; use 'duckdb' or 'spark'.")
        self.backend = backend

    def register(self, df: pd.DataFrame) -> SplinkDataFrame:
        """Register a prepared frame (every column as string)."""
        table = _to_arrow(df)
        if self.backend == "spark":
            spark = self.db_api.spark  # type: ignore[attr-defined]
            return self.db_api.register(spark.createDataFrame(table.to_pandas()))
        return self.db_api.register(table)

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spark_api() -> DatabaseAPISubClass:
    try:
        from pyspark.sql import SparkSession
        from splink import SparkAPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MatchingError("backend='spark' needs pyspark installed (pip install pyspark).") from exc
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cdp-matching")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    return SparkAPI(spark_session=spark)


def _register_term_frequencies(linker: Linker, session: _Session, tf: Mapping[str, Mapping[str, float]]) -> None:
    """Register the model's stored term-frequency lookups (values not listed get no TF adjustment)."""
    for column, mapping in tf.items():
        frame = pd.DataFrame({column: list(mapping.keys()), f"tf_{column}": list(mapping.values())})
        if session.backend == "spark":
            spark = session.db_api.spark  # type: ignore[attr-defined]
            sdf = session.db_api.register(spark.createDataFrame(frame))
        else:
            table = pa.table({column: pa.array(frame[column], pa.string()), f"tf_{column}": pa.array(frame[f"tf_{column}"], pa.float64())})
            sdf = session.db_api.register(table)
        linker.table_management.register_term_frequency_lookup(sdf, column)


def _term_frequencies(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Most frequent values (seen at least twice) per column, with their share of the non-null values."""
    out: dict[str, dict[str, float]] = {}
    for column in columns:
        values = df[column].dropna()
        if values.empty:
            out[column] = {}
            continue
        counts = values.value_counts()
        counts = counts[counts >= 2]
        frame = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
        frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="mergesort").head(TF_TOP_K)
        total = float(len(values))
        out[column] = {str(v): float(c) / total for v, c in zip(frame["value"], frame["count"], strict=True)}
    return out


def _new_linker(model_settings: Mapping[str, Any], sdf: SplinkDataFrame) -> Linker:
    return Linker(sdf, copy.deepcopy(dict(model_settings)), log_level=None)


# ============================================================================================ train
def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, int | float) and 0.0 < float(threshold) < 1.0):
        raise MatchingError(f"threshold is a match probability strictly between 0 and 1; got {threshold!r}.")
    return float(threshold)


def train(
    df: pd.DataFrame,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 42,
    max_pairs: float = 1e6,
    backend: Backend = "duckdb",
) -> MatchModel:
    """Train a matching model on match rows, without labels.

    1. ``prepare`` the rows and pick comparisons (`choose_comparisons`) and prediction blocking rules
       (`blocking_rules`) from the fields that are filled in.
    2. Prior (lambda, the probability that two random records match): pairs found by deterministic
       rules (exact email; exact phone; exact first + last name + birthday) divided by all pairs,
       scaled up by an assumed recall of `PRIOR_RECALL`.
    3. u probabilities: comparisons of about ``max_pairs`` random pairs (deterministic, seeded sample).
    4. m probabilities: expectation maximisation over pairs blocked on birthday, and on first + last
       name (plus further rules if a comparison is still untrained), at most `EM_MAX_PAIRS` pairs each.

    ``threshold`` is stored in the model as the default link threshold; the default
    `DEFAULT_THRESHOLD` (0.999, i.e. match weight >= ~10) favours precision over recall.
    Raises `MatchingError` with fewer than `MIN_TRAINING_ROWS` rows, or when the rows lack two
    usable identifying fields.
    """
    started = time.perf_counter()
    threshold = _check_threshold(threshold)
    prepared = _ensure_prepared(df)
    n = len(prepared)
    if n < MIN_TRAINING_ROWS:
        raise MatchingError(
            f"Too few rows to train a matching model: got {n}, need at least {MIN_TRAINING_ROWS}. "
            "Train on all match rows (CRM contacts and identified users) together, or keep using "
            "deterministic matching until there are enough.",
            {"rows": n, "min_rows": MIN_TRAINING_ROWS},
        )
    chosen = _choose(prepared)
    if len(chosen) < 2:
        raise MatchingError(
            "Cannot train: fewer than two usable fields (need >= "
            f"{MIN_FILL:.0%} filled and >= 2 distinct values). Found: {[name for name, _ in chosen]}."
        )
    names = [name for name, _ in chosen]
    em_rules = _training_rules(prepared, names)
    det_rules = _deterministic_rules(prepared)
    prediction_rules = _rule_columns(prepared)
    tf_columns = [c for c in _TF_COLUMNS if c in names]
    seconds: dict[str, float] = {"prepare": time.perf_counter() - started}

    tick = time.perf_counter()
    tf = _term_frequencies(prepared, tf_columns)
    creator = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[comparison for _, comparison in chosen],
        blocking_rules_to_generate_predictions=[_rule(cols) for cols in prediction_rules],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=True,
        max_iterations=25,
        em_convergence=1e-4,
    )
    with _Session(backend) as session:
        sdf = session.register(prepared)
        linker = Linker(sdf, creator, log_level=None)
        _register_term_frequencies(linker, session, tf)
        seconds["setup"] = time.perf_counter() - tick

        tick = time.perf_counter()
        prior_source = "deterministic rules"
        if det_rules:
            try:
                linker.training.estimate_probability_two_random_records_match(det_rules, recall=PRIOR_RECALL)
            except ValueError:
                prior_source = "fallback (deterministic rules matched too many pairs)"
        else:
            prior_source = "fallback (no deterministic rules possible)"
        floor = 0.1 / max(n - 1, 1)
        prior = float(linker._settings_obj._probability_two_random_records_match)
        if prior_source != "deterministic rules" or not prior > 0:
            prior = floor
            prior_source = prior_source if prior_source != "deterministic rules" else "fallback (no exact matches)"
        prior = min(max(prior, 1e-9), 0.5)
        linker._settings_obj._probability_two_random_records_match = prior
        seconds["prior"] = time.perf_counter() - tick

        tick = time.perf_counter()
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
        seconds["u"] = time.perf_counter() - tick

        tick = time.perf_counter()
        em: list[dict[str, Any]] = []
        for cols in em_rules:
            try:
                em_session = linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*cols), max_pairs=EM_MAX_PAIRS, record_sample_proportion=min(1.0, max(0.01, 20_000 / n))
                )
            except SplinkException as exc:
                raise MatchingError(
                    f"EM training blocked on {list(cols)} failed: {exc}. The rows may have too few "
                    "likely duplicates; add more rows."
                ) from exc
            iterations = len(em_session._core_model_settings_history) - 1
            em.append({"blocking_rule": list(cols), "iterations": iterations, "converged": iterations < 25})
        seconds["em"] = time.perf_counter() - tick

        settings = linker.misc.save_model_to_json()
    settings.pop("linker_uid", None)
    _fill_untrained(settings, max_pairs)
    seconds["total"] = time.perf_counter() - started

    metrics: dict[str, Any] = {
        "prior": prior,
        "prior_weight": _prob_to_weight(prior),
        "prior_source": prior_source,
        "prior_rules": det_rules,
        "prior_recall": PRIOR_RECALL,
        "em": em,
        "em_max_pairs": EM_MAX_PAIRS,
        "u_max_pairs": max_pairs,
        "seed": seed,
        "comparisons": _parameter_summary(settings),
        "blocking_rules": [list(cols) for cols in prediction_rules],
        "fill": {c: round(float(prepared[c].notna().mean()), 4) for c in FIELDS[1:]},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "versions": {"splink": splink.__version__, "duckdb": duckdb.__version__},
        "backend": backend,
    }
    used_fields = tuple(dict.fromkeys(c for name in names for c in COMPARISON_COLUMNS[name]))
    return MatchModel(
        settings=settings,
        fields=used_fields,
        threshold=threshold,
        trained_rows=n,
        metrics=metrics,
        term_frequencies=tf,
    )


def _fill_untrained(settings: dict[str, Any], u_pairs: float) -> None:
    """Give levels that training never observed explicit parameters.

    A level never seen among the ``u_pairs`` random pairs gets u = 1 / u_pairs (about the largest
    value consistent with not seeing it); a level EM never saw gets m = u (weight 0), so it adds no
    evidence either way.
    """
    for comparison in settings["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        u_floor = 1.0 / max(u_pairs, 1.0)
        for level in levels:
            if not isinstance(level.get("u_probability"), int | float):
                level["u_probability"] = u_floor
            if not isinstance(level.get("m_probability"), int | float):
                level["m_probability"] = level["u_probability"]


def _parameter_summary(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for comparison in settings["comparisons"]:
        levels = []
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            m, u = float(level["m_probability"]), float(level["u_probability"])
            levels.append(
                {
                    "level": str(level.get("label_for_charts", level["sql_condition"])),
                    "m": round(m, 6),
                    "u": round(u, 8),
                    "weight": round(math.log2(m / u), 3) if m > 0 and u > 0 else None,
                }
            )
        out.append({"comparison": comparison["output_column_name"], "levels": levels})
    return out


# ============================================================================================ predict
def _edges(model: MatchModel, scored: SplinkDataFrame) -> pd.DataFrame:
    """Splink predictions -> the documented edge frame (l < r, one mw_ column per comparison)."""
    raw = scored.as_pandas_dataframe()
    return _edges_from_raw(model, raw)


def _edges_from_raw(model: MatchModel, raw: pd.DataFrame) -> pd.DataFrame:
    left = raw["unique_id_l"].astype(str).to_numpy(dtype=object)
    right = raw["unique_id_r"].astype(str).to_numpy(dtype=object)
    swap = left > right
    out = pd.DataFrame(
        {
            "unique_id_l": np.where(swap, right, left),
            "unique_id_r": np.where(swap, left, right),
            "match_weight": raw["match_weight"].astype("float64").to_numpy(),
            "match_probability": raw["match_probability"].astype("float64").to_numpy(),
        }
    )
    for name in model.comparisons:
        weight = raw[f"mw_{name}"].astype("float64").to_numpy()
        adj = f"mw_tf_adj_{name}"
        if adj in raw.columns:
            weight = weight + raw[adj].astype("float64").fillna(0.0).to_numpy()
        out[f"mw_{name}"] = weight
    out = out[out["unique_id_l"] != out["unique_id_r"]]
    out = out.drop_duplicates(["unique_id_l", "unique_id_r"])
    return out.sort_values(["unique_id_l", "unique_id_r"], kind="mergesort").reset_index(drop=True)


def _empty_edges(model: MatchModel) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {
        "unique_id_l": pd.Series([], dtype=object),
        "unique_id_r": pd.Series([], dtype=object),
        "match_weight": pd.Series([], dtype="float64"),
        "match_probability": pd.Series([], dtype="float64"),
    }
    for name in model.comparisons:
        cols[f"mw_{name}"] = pd.Series([], dtype="float64")
    return pd.DataFrame(cols)


def predict(
    model: MatchModel, df: pd.DataFrame, *, threshold: float | None = None, backend: Backend = "duckdb"
) -> pd.DataFrame:
    """All candidate pairs within ``df`` scoring at/above ``threshold`` (default ``model.threshold``).

    Candidates come from the model's blocking rules. Returns one row per pair, sorted:
    ``unique_id_l`` < ``unique_id_r``, ``match_weight``, ``match_probability`` and ``mw_<comparison>``
    (partial match weight per comparison, TF adjustment included; see the module docstring), so
    ``match_weight = model.prior_weight + sum of the mw_ columns``.
    """
    thr = _check_threshold(model.threshold if threshold is None else threshold)
    prepared = _ensure_prepared(df)
    if len(prepared) < 2:
        return _empty_edges(model)
    with _Session(backend) as session:
        sdf = session.register(prepared)
        linker = _new_linker(model.settings, sdf)
        _register_term_frequencies(linker, session, model.term_frequencies)
        scored = linker.inference.predict(threshold_match_probability=thr, warning_mode="never")
        return _edges(model, scored)
