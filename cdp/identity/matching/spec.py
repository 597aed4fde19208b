"""Which comparisons and blocking rules a matching model uses (see `cdp.identity.matching`).

Chosen from the fields that are filled in, never tuned per dataset.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import splink
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink.blocking_rule_library import CustomRule, block_on
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.comparison_creator import ComparisonCreator
from splink.internals.comparison_level_creator import ComparisonLevelCreator
from splink.internals.dialects import SplinkDialect

from cdp.identity.matching.prepare import (
    DERIVED,
    EXTRA_PREFIX,
    FIELDS,
    INITIAL_BLOCK_FLAG,
    NAME_BLOCK_FLAG,
    MatchingError,
    ensure_prepared,
)

MIN_FILL = 0.05
"""A field is used only when at least this share of rows has a value (and it has >= 2 distinct values)."""

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
    "company": ("company",),
    "title": ("title",),
    "first_name_conflict": ("first_name",),
}
"""Comparison (output column) name -> the prepared field it compares. Output weights are ``mw_<name>``.
Extra traits (``x_<trait>`` columns, see `usable_extras`) are compared under their own column name."""

TF_COLUMNS = (
    "first_name", "last_name", "email", "phone", "birthday", "address_postal_code", "address_city", "company", "title",
)  # fmt: skip
"""Columns whose exact-match levels are term-frequency adjusted (and every extra trait)."""

MAX_EXTRAS = 4
"""At most this many extra traits are compared (the best filled)."""


def columns_of(name: str) -> tuple[str, ...]:
    """The prepared columns a comparison compares (an extra trait compares its own column)."""
    return COMPARISON_COLUMNS.get(name, (name,))


def _informative(values: pd.Series, rows: int) -> bool:
    return len(values) >= MIN_FILL * rows and len(values) > 0 and bool((values != values.iloc[0]).any())


def usable_extras(df: pd.DataFrame) -> tuple[str, ...]:
    """Extra trait columns (``x_*``) worth comparing: filled in at least `MIN_FILL` of rows, two or more
    distinct values, and not a different value on nearly every row (a row id or a timestamp says nothing
    about who a record is). At most `MAX_EXTRAS`, the best filled first."""
    found: list[tuple[float, str]] = []
    for column in df.columns:
        if not (isinstance(column, str) and column.startswith(EXTRA_PREFIX)) or len(df) == 0:
            continue
        values = df[column].dropna()
        if not _informative(values, len(df)) or values.nunique() > 0.95 * len(values):
            continue
        found.append((-len(values), column))
    return tuple(column for _, column in sorted(found)[:MAX_EXTRAS])


def usable_fields(df: pd.DataFrame) -> frozenset[str]:
    """Prepared columns with at least `MIN_FILL` non-null values and at least two distinct values, and the
    `usable_extras`."""
    out = set(usable_extras(df))
    for column in (*FIELDS[1:], *DERIVED):
        if column not in df.columns or len(df) == 0:
            continue
        if _informative(df[column].dropna(), len(df)):
            out.add(column)
    return frozenset(out)


READS = {
    "first_name": ("first_name", "last_name", "first_name_nicknames"),
    "email": ("email", "email_user", "email_domain", "email_digits"),
    "first_name_conflict": (
        "first_name",
        "last_name",
        "first_name_nicknames",
        "first_name_known",
        "birthday",
        "email_user",
    ),
}
"""Columns a comparison's SQL reads in training, where more than its own field (the swapped-names level)."""


class _SqlLevel(ComparisonLevelCreator):
    """A level from a SQL template: ``{jw}``, ``{lev}`` and ``{dl}`` become the dialect's Jaro-Winkler,
    Levenshtein and Damerau-Levenshtein functions."""

    def __init__(self, template: str, label: str) -> None:
        self.template = template
        self.label = label

    def create_sql(self, sql_dialect: SplinkDialect) -> str:
        return self.template.format(
            jw=sql_dialect.jaro_winkler_function_name,
            lev=sql_dialect.levenshtein_function_name,
            dl=sql_dialect.damerau_levenshtein_function_name,
        )

    def create_label_for_charts(self) -> str:
        return self.label


def _one_edit(column: str, *, long: bool = False) -> str:
    """Damerau-Levenshtein <= 1, written so that the slow Damerau-Levenshtein (6x Levenshtein in DuckDB)
    only runs on same-length pairs at Levenshtein distance 2 (a possible transposition).

    ``long`` (phone numbers, postal codes): Levenshtein only runs on pairs that agree on their first or
    their last k characters, k = (shorter length - 2) / 2 -- one edit (or one swap of neighbours) at any
    place leaves a prefix or a suffix at least that long untouched. Most pairs of phone numbers fail that
    test; for names the test costs more than it saves."""
    left, right = f"{column}_l", f"{column}_r"
    edit = (
        f"({{lev}}({left}, {right}) <= 1 OR (length({left}) = length({right})"
        f" AND {{lev}}({left}, {right}) = 2 AND {{dl}}({left}, {right}) <= 1))"
    )
    if not long:
        return edit
    k = f"greatest(CAST(floor((least(length({left}), length({right})) - 2) / 2) AS INT), 0)"
    return f"((left({left}, {k}) = left({right}, {k}) OR right({left}, {k}) = right({right}, {k})) AND {edit})"


_SWAPPED = (
    "(first_name_l = last_name_r AND {jw}(last_name_l, first_name_r) >= 0.88)"
    " OR (last_name_l = first_name_r AND {jw}(first_name_l, last_name_r) >= 0.88)"
)
_NICKNAME = (
    "instr(first_name_nicknames_l, '|' || first_name_r || '|') > 0"
    " OR instr(first_name_nicknames_r, '|' || first_name_l || '|') > 0"
)
"""A nickname or the formal form of the other first name, also through a corrected typo or a short form
(`cdp.identity.names.related_names`). Both sides are searched: a misspelling's row lists the names it
is related to, the known name's row does not list the misspelling."""
_PREFIX = (
    "substr(first_name_l, 1, length(first_name_r)) = first_name_r"
    " OR substr(first_name_r, 1, length(first_name_l)) = first_name_l"
)
_BOTH_KNOWN = "coalesce(first_name_known_l = '1' AND first_name_known_r = '1', false)"
_RELATED_FIRST_NAMES = (
    f"{_NICKNAME} OR {_PREFIX} OR {_SWAPPED} OR (least(length(first_name_l), length(first_name_r)) >= 4"
    f" AND NOT {_BOTH_KNOWN} AND ({{jw}}(first_name_l, first_name_r) >= 0.88 OR {_one_edit('first_name')}))"
)
"""First names of one person: a nickname or formal form, an initial or short form, swapped with the last
name, or one typo apart when both have four letters or more (R / J, Amy / Ada are other names) -- unless
the name lists know both (Mary / Mark are two people, not a typo)."""


def _name_comparison(column: str) -> ComparisonCreator:
    """Exact (TF), Jaro-Winkler >= 0.92, >= 0.88, then for first names: nickname or formal form
    (bob / robert), swapped with the last name (counted here only, not twice), initial or short form
    (j / jon / jonathan); then Jaro-Winkler >= 0.7, else."""
    levels: list[ComparisonLevelCreator | dict[str, Any]] = [
        cll.NullLevel(column),
        cll.ExactMatchLevel(column, term_frequency_adjustments=True),
        cll.JaroWinklerLevel(column, 0.92),
        cll.JaroWinklerLevel(column, 0.88),
    ]
    extra = ""
    if column == "first_name":
        levels += [
            _SqlLevel(_NICKNAME, "Nickname or formal form"),
            _SqlLevel(_SWAPPED, "First and last name swapped"),
            _SqlLevel(_PREFIX, "Initial or short form"),
        ]
        extra = ", nickname, swapped with last name, initial or short form"
    levels += [cll.JaroWinklerLevel(column, 0.7), cll.ElseLevel()]
    return cl.CustomComparison(
        output_column_name=column,
        comparison_description=f"{column}: exact, Jaro-Winkler >= 0.92, >= 0.88{extra}, >= 0.7, else",
        comparison_levels=levels,
    )


def _email_comparison() -> ComparisonCreator:
    """Exact (TF); the same domain and a letter of the user mistyped (same length, same digits,
    Jaro-Winkler >= 0.88: patricia.j / patirica.j); else.

    A typo in an address is common in forms. But most user names are made of the person's name, so
    similarity there repeats the name evidence: namesakes at one provider differ in their digits
    (john.smith12 / john.smith45: at a million rows, tens of thousands of such pairs), and a user with digits
    added (donna.grant / donna.grant56) is another address. For the same reason the same user at another
    domain (david.smith@ two employers) is no level of its own.
    """
    return cl.CustomComparison(
        output_column_name="email",
        comparison_description="email: exact, same domain and similar user, else",
        comparison_levels=[
            cll.NullLevel("email"),
            cll.ExactMatchLevel("email", term_frequency_adjustments=True),
            _SqlLevel(
                "email_domain_l = email_domain_r AND length(email_user_l) = length(email_user_r)"
                " AND coalesce(email_digits_l, '') = coalesce(email_digits_r, '')"
                " AND {jw}(email_user_l, email_user_r) >= 0.88",
                "Same domain, a letter mistyped in the user",
            ),
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
            # phones are digits only (`prepare`): their last 8 characters, without a regular expression
            _SqlLevel(
                "length(phone_l) >= 8 AND length(phone_r) >= 8 AND right(phone_l, 8) = right(phone_r, 8)",
                "Same last 8 digits",
            ),
            _SqlLevel(_one_edit(phone, long=True), "One edit (Damerau-Levenshtein <= 1)"),
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
            _SqlLevel(_one_edit(pc), "One edit (Damerau-Levenshtein <= 1)"),
            cll.ExactMatchLevel(splink.ColumnExpression(pc).substr(1, 3)).configure(
                label_for_charts="Same first 3 characters"
            ),
            cll.ElseLevel(),
        ],
    )


_PC = "address_postal_code"


def _more_than_one_edit(column: str) -> str:
    """``NOT`` `_one_edit`, written so that most unrelated pairs need no edit distance at all.

    For strings of 4 or more characters, one edit or one swap of neighbours leaves the first character
    or the last two in place: pairs that differ in both are further apart, without computing anything.
    """
    left, right = f"{column}_l", f"{column}_r"
    return (
        f"((length({left}) >= 4 AND length({right}) >= 4 AND substr({left}, 1, 1) <> substr({right}, 1, 1)"
        f" AND right({left}, 2) <> right({right}, 2))"
        f" OR ({{lev}}({left}, {right}) > 1 AND NOT (length({left}) = length({right})"
        f" AND {{lev}}({left}, {right}) = 2 AND {{dl}}({left}, {right}) <= 1)))"
    )


_MOVED = (
    f"{_PC}_l IS NOT NULL AND {_PC}_r IS NOT NULL AND substr({_PC}_l, 1, 3) <> substr({_PC}_r, 1, 3)"
    f" AND {_more_than_one_edit(_PC)}"
)
"""Postal codes both known and unrelated (the postal code comparison's else level): another address."""
MOVED_COMPARISONS = ("address_city", "address_street")
"""Comparisons that get a `moved_level` (when the postal code is compared too: `counts_moves`)."""


def counts_moves(names: Collection[str]) -> bool:
    """Whether a model with these comparisons gets `moved_level` (it needs the postal code compared)."""
    return _PC in names


def moved_level(what: str) -> ComparisonLevelCreator:
    """A different ``what`` (city or street) where the postal codes differ too: weight 0.

    Someone who moved has another postal code, city and street at once. EM assumes the comparisons are
    independent and would count one move three times (about -12 bits, more than an equal birthday
    earns): given that the postal codes differ, a different city or street says nothing more. This
    level is not trained: `cdp.identity.matching.train` inserts it after EM, before the else level
    (trained with it, EM would give the else level, then only "postal codes alike, city differs",
    a positive weight from its tiny u). Agreements still count: a postal code typo with the same city
    and street is strong evidence."""
    return _SqlLevel(_MOVED, f"Different {what}, postal codes differ too: counted there").configure(
        m_probability=0.5, u_probability=0.5, fix_m_probability=True, fix_u_probability=True
    )


def _city_comparison(moved: bool) -> ComparisonCreator:
    city = "address_city"
    return cl.CustomComparison(
        output_column_name=city,
        comparison_description="city: exact, Jaro-Winkler >= 0.92, >= 0.8, else",
        comparison_levels=[
            cll.NullLevel(city),
            cll.ExactMatchLevel(city, term_frequency_adjustments=True),
            cll.JaroWinklerLevel(city, 0.92),
            cll.JaroWinklerLevel(city, 0.8),
            *([moved_level("city")] if moved else []),
            cll.ElseLevel(),
        ],
    )


def _street_comparison(moved: bool) -> ComparisonCreator:
    street = "address_street"
    return cl.CustomComparison(
        output_column_name=street,
        comparison_description="street: exact, Jaro-Winkler >= 0.94, >= 0.9, >= 0.8, else",
        comparison_levels=[
            cll.NullLevel(street),
            cll.ExactMatchLevel(street),
            cll.JaroWinklerLevel(street, 0.94),
            cll.JaroWinklerLevel(street, 0.9),
            cll.JaroWinklerLevel(street, 0.8),
            *([moved_level("street")] if moved else []),
            cll.ElseLevel(),
        ],
    )


_SWAPPED_DATE = (
    "year(birthday_l) = year(birthday_r) AND month(birthday_l) = dayofmonth(birthday_r)"
    " AND dayofmonth(birthday_l) = month(birthday_r)"
)
_ONE_TYPO_DATE = (
    "substr(CAST(birthday_l AS STRING), 2, 2) = substr(CAST(birthday_r AS STRING), 2, 2)"
    " AND {lev}(CAST(birthday_l AS STRING), CAST(birthday_r AS STRING)) <= 2"
    " AND {dl}(CAST(birthday_l AS STRING), CAST(birthday_r AS STRING)) <= 1"
)
"""One digit wrong or two neighbours swapped, but not in the century or decade (1970 / 1990 is ten years).
The cheap tests come first and Damerau-Levenshtein (several times slower) last: a database evaluates a
level's ``AND`` from the left on the pairs still in question, and Levenshtein <= 2 holds whenever
Damerau-Levenshtein <= 1 does, so it only removes pairs that could not pass."""
_COMPATIBLE_BIRTHDAYS = f"birthday_l = birthday_r OR {_ONE_TYPO_DATE} OR ({_SWAPPED_DATE})"
"""One person's birthday written twice: equal, one digit typed wrong or two swapped, day and month swapped."""


def _birthday_comparison() -> ComparisonCreator:
    """Exact (TF); one typo (one digit wrong, or two neighbours swapped: 1971-06-24 / 1971-05-24); day and
    month swapped; within a month, a year, ten years; else."""
    birthday = "birthday"
    levels: list[ComparisonLevelCreator | dict[str, Any]] = [
        cll.NullLevel(birthday),
        cll.ExactMatchLevel(birthday, term_frequency_adjustments=True),
        _SqlLevel(_ONE_TYPO_DATE, "One typo (Damerau-Levenshtein <= 1)"),
        _SqlLevel(_SWAPPED_DATE, "Day and month swapped"),
    ]
    windows: tuple[tuple[int, Literal["month", "year"], str], ...] = (
        (1, "month", "Within 1 month"), (1, "year", "Within 1 year"), (10, "year", "Within 10 years"),
    )  # fmt: skip
    for threshold, metric, text in windows:
        within = cll.AbsoluteDateDifferenceLevel(birthday, threshold=threshold, metric=metric, input_is_string=False)
        levels.append(within.configure(label_for_charts=text))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(
        output_column_name=birthday,
        comparison_description="birthday: exact, one typo, day/month swapped, <= 1 month, <= 1 year, <= 10 years",
        comparison_levels=levels,
    )


def _text_comparison(column: str) -> ComparisonCreator:
    """Company, job title and extra traits: exact (TF), Jaro-Winkler >= 0.9, >= 0.7, else."""
    return cl.CustomComparison(
        output_column_name=column,
        comparison_description=f"{column}: exact, Jaro-Winkler >= 0.9, >= 0.7, else",
        comparison_levels=[
            cll.NullLevel(column),
            cll.ExactMatchLevel(column, term_frequency_adjustments=True).configure(label_for_charts="Exact match"),
            cll.JaroWinklerLevel(column, 0.9).configure(label_for_charts="Jaro-Winkler >= 0.9"),
            cll.JaroWinklerLevel(column, 0.7).configure(label_for_charts="Jaro-Winkler >= 0.7"),
            cll.ElseLevel(),
        ],
    )


GUARD = "first_name_conflict"
"""The veto comparison: first names both known and unrelated, birthdays not compatible -> a huge negative weight."""
_CONFLICT = (
    "CASE WHEN first_name_l IS NULL OR first_name_r IS NULL THEN false"
    f" WHEN {_RELATED_FIRST_NAMES} THEN false"
    f" WHEN ({_COMPATIBLE_BIRTHDAYS}) AND NOT coalesce(email_user_l <> email_user_r, false) THEN false"
    " ELSE true END"
)
"""First names both present and unrelated, and the birthdays not compatible or the email addresses of two
different users: twins share a birthday, an address and a landline, but neither a first name nor an email
address. (Equal birthdays alone do not lift the veto's doubt for nothing: in FEBRL a duplicate's first name
is often replaced outright, and the rest of the record agrees.)

Written as a ``CASE`` (a null test counts as false, as ``coalesce(.., false)`` would): each ``WHEN`` is
only evaluated on the pairs the earlier ones left undecided, and its ``OR`` and ``AND`` stop early, where
``NOT coalesce(..)`` around them made the database compute every test on every pair (4x slower; this
level is computed for every pair scored)."""


def _guard_comparison() -> ComparisonCreator:
    """Different people share last names, addresses, landlines and family emails; they rarely share a
    first name. Fellegi-Sunter adds those correlated agreements up as if independent, so a household
    member would outscore the first-name disagreement. This fixed (untrained) comparison vetoes pairs
    whose first names are both present and unrelated -- not within Jaro-Winkler 0.88 or one edit, not
    a nickname or formal form of the other, not an initial or short form, not swapped with the last
    name -- unless their birthdays are equal; its weight is set after training to outweigh all other weights together.
    """
    return cl.CustomComparison(
        output_column_name=GUARD,
        comparison_description="veto: unrelated first names without a compatible birthday",
        comparison_levels=[
            _SqlLevel(_CONFLICT, "First names unrelated, birthdays or email users differ").configure(
                m_probability=2.0**-60, u_probability=1.0, fix_m_probability=True, fix_u_probability=True
            ),
            cll.ElseLevel().configure(
                m_probability=1.0, u_probability=1.0, fix_m_probability=True, fix_u_probability=True
            ),
        ],
    )


def _comparisons(fields: Collection[str]) -> list[tuple[str, ComparisonCreator]]:
    names = [n for n, cols in COMPARISON_COLUMNS.items() if set(cols) <= set(fields)]
    return comparisons_named([*names, *sorted(f for f in fields if f.startswith(EXTRA_PREFIX))])


def comparisons_named(names: Collection[str], *, moved: bool = False) -> list[tuple[str, ComparisonCreator]]:
    """Fresh comparison creators for the given comparison names, in model order: as EM trains them, or
    with ``moved``, as a trained model scores (with a `moved_level` in city and street, when the postal
    code is among ``names``)."""
    moved = moved and counts_moves(names)
    makers = {
        "first_name": lambda: _name_comparison("first_name"),
        "last_name": lambda: _name_comparison("last_name"),
        "email": _email_comparison,
        "phone": _phone_comparison,
        "birthday": _birthday_comparison,
        "address_postal_code": _postcode_comparison,
        "address_city": lambda: _city_comparison(moved),
        "address_street": lambda: _street_comparison(moved),
        "address_country": lambda: cl.ExactMatch("address_country"),
        "company": lambda: _text_comparison("company"),
        "title": lambda: _text_comparison("title"),
        GUARD: _guard_comparison,
    }
    out = [(name, make()) for name, make in makers.items() if name in names and name != GUARD]
    out += [(name, _text_comparison(name)) for name in sorted(n for n in names if n.startswith(EXTRA_PREFIX))]
    if GUARD in names:
        out.append((GUARD, _guard_comparison()))
    return out


def choose_comparisons(df: pd.DataFrame) -> list[ComparisonCreator]:
    """Splink comparisons for the fields that are usable in ``df`` (raw or prepared match rows).

    A field is usable when at least `MIN_FILL` of rows have a value and it has two or more distinct
    values. No per-dataset tuning: the same levels everywhere, EM learns their weights.

    ========================  ==========================================================================
    comparison (``mw_`` name)  levels, most similar first (TF: term-frequency adjusted, penalties only)
    ========================  ==========================================================================
    first_name                exact (TF), Jaro-Winkler >= 0.92, >= 0.88, nickname or formal form
                              (bob / robert; also of a corrected typo, thoams / tom, or a short form,
                              liv / olivia), swapped with the last name, initial or short form
                              (j / jon / jonathan), Jaro-Winkler >= 0.7, else
    last_name                 exact (TF), Jaro-Winkler >= 0.92, >= 0.88, >= 0.7, else
    email                     exact (TF), same domain and a letter of the user mistyped (same length and
                              digits, Jaro-Winkler >= 0.88), else
    phone                     exact (TF), same last 8 digits, one edit (Damerau-Levenshtein), else
    birthday                  on a DATE: exact (TF), one typo (Damerau-Levenshtein on the ISO text),
                              day and month swapped, <= 1 month, <= 1 year, <= 10 years, else
    address_postal_code       exact (TF), one edit, same first 3 characters, else
    address_city              exact (TF), Jaro-Winkler >= 0.92, >= 0.8, else
    address_street            exact, Jaro-Winkler >= 0.94, >= 0.9, >= 0.8, else
    address_country           exact, else
    company, title, x_*       exact (TF), Jaro-Winkler >= 0.9, >= 0.7, else (``x_*``: `usable_extras`)
    first_name_conflict       fixed veto (not trained): first names both known and unrelated and
                              birthdays not compatible (equal, one typo, day/month swapped) or email
                              users differ; else 0
    ========================  ==========================================================================

    Every comparison also has a null level (weight 0) for a missing value on either side.
    """
    return [comparison for _, comparison in _comparisons(usable_fields(ensure_prepared(df)))]


def named_comparisons(fields: Collection[str]) -> list[tuple[str, ComparisonCreator]]:
    """(name, comparison) for the usable ``fields``, in model order."""
    return _comparisons(fields)


_PREDICTION_RULES: tuple[tuple[str, ...], ...] = (
    ("email",),
    ("phone",),
    ("first_name", "birthday"),
    ("last_name", "birthday"),
    ("address_postal_code", "last_name"),
    ("address_postal_code", "first_name"),
    ("address_postal_code", "birthday"),
    ("first_name", "last_name", NAME_BLOCK_FLAG),
    ("last_name", "first_initial", INITIAL_BLOCK_FLAG),
    ("birthday", "first_name_2"),
    ("swapped_names",),
    ("address_street", "address_postal_code"),
    ("address_number", "address_postal_code"),
    ("birthday", "address_number"),
    ("birthday", "address_city"),
    ("birthday", "last_name_2"),
    ("address_number", "first_name_2", "last_name_2"),
)
"""Blocking keys per rule; a pair is a candidate when it agrees on every key of at least one rule."""

_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "first_name_2": ("substr(first_name, 1, 2)", ("first_name",)),
    "last_name_2": ("substr(last_name, 1, 2)", ("last_name",)),
    "swapped_names": ("", ("first_name", "last_name")),
    NAME_BLOCK_FLAG: (NAME_BLOCK_FLAG, ("first_name", "last_name")),
    INITIAL_BLOCK_FLAG: (INITIAL_BLOCK_FLAG, ("first_name", "last_name")),
}
"""Blocking keys that are not plain columns: SQL expression and the columns it needs."""
_SWAPPED_NAMES = "l.first_name = r.last_name and l.last_name = r.first_name"


MIN_BLOCKING_DISTINCT = 20
"""An extra trait or job title joins first + last name in a blocking rule when it has at least this many
distinct values (birth place, occupation): people who share a common full name are then still paired."""


_WIDE_RULES: tuple[tuple[str, ...], ...] = (
    ("birthday",),
    ("last_name", "address_city"),
    ("first_name", "address_city"),
)
"""Wider blocking rules, used only where the data keeps them cheap (`WIDE_RULE_PAIRS`): a duplicate with
typos in its name *and* its birthday is still paired by its birthday alone or by a name and its town."""
WIDE_RULE_PAIRS = 2
"""A wide rule is used when the pairs it makes are at most this many per row (measured on the rows at
training, scaled to all rows), about what the fixed rules make together on a CRM-like store: on a small
or varied store it costs little; on a million CRM rows the birthday alone would make 9 pairs a row and
double the scoring, so it is left out."""


def rule_keys(
    fields: Collection[str],
    distinct: Mapping[str, int] | None = None,
    wide: Collection[tuple[str, ...]] = (),
) -> list[tuple[str, ...]]:
    """The prediction rules (as key tuples) whose columns are all usable; with ``distinct`` (distinct
    values per column), also first + last name + each varied extra trait or job title (and last name +
    each such trait, when it is in ``wide``); then the ``wide`` rules (see `wide_rules`)."""

    def usable(key: str) -> bool:
        return all(c in fields for c in _KEYS.get(key, ("", (key,)))[1])

    keys = [keys for keys in _PREDICTION_RULES if all(usable(k) for k in keys)]
    if distinct and {"first_name", "last_name"} <= set(fields):
        varied = sorted(c for c in fields if (c == "title" or c.startswith(EXTRA_PREFIX)) and
                        distinct.get(c, 0) >= MIN_BLOCKING_DISTINCT)  # fmt: skip
        keys += [("first_name", "last_name", c) for c in varied]
    keys += [tuple(k) for k in wide if tuple(k) not in keys and all(usable(c) for c in k)]
    return keys


def wide_rules(prepared: pd.DataFrame, fields: Collection[str], rows: int | None = None) -> list[tuple[str, ...]]:
    """The wide rules (`_WIDE_RULES`, and last name + each varied extra trait) that pair at most
    `WIDE_RULE_PAIRS` per row. ``prepared`` may be a uniform sample of ``rows`` rows: pairs grow with the
    square of the rows, so the count is scaled by (rows / sample)^2."""
    n = len(prepared)
    rows = max(rows or n, n)
    if n < 2:
        return []
    candidates = list(_WIDE_RULES)
    if "last_name" in fields:
        candidates += [("last_name", c) for c in sorted(fields) if c.startswith(EXTRA_PREFIX)
                       and prepared[c].nunique() >= MIN_BLOCKING_DISTINCT]  # fmt: skip
    chosen = []
    for keys in candidates:
        columns = list(keys)  # plain columns only
        if not all(c in prepared.columns and c in fields for c in columns):
            continue
        sizes = prepared[columns].dropna().value_counts().to_numpy(dtype=np.float64)
        pairs = float((sizes * (sizes - 1) / 2).sum()) * (rows / n) ** 2
        if pairs <= WIDE_RULE_PAIRS * rows:
            chosen.append(keys)
    return chosen


def rule(keys: Sequence[str]) -> BlockingRuleCreator:
    """A Splink blocking rule from a key tuple."""
    if tuple(keys) == ("swapped_names",):
        return CustomRule(_SWAPPED_NAMES)
    return block_on(*(_KEYS[k][0] if k in _KEYS else k for k in keys))


def blocking_rules(df: pd.DataFrame) -> list[BlockingRuleCreator]:
    """Blocking rules for prediction: candidate pairs must agree exactly on one of these key sets.

    Several rules, so that a duplicate with a typo in any one field is still compared: email; phone;
    first name + birthday; last name + birthday; postal code + last name; postal code + first name;
    postal code + birthday; first + last name (unless more than `MAX_NAME_BLOCK` rows share that full
    name: ``full_name_blockable`` is null for them); first and last name swapped; street + postal code;
    house number + postal code; birthday + house number; birthday + city; birthday + first two
    letters of the last name; house number + first two letters of both names -- those whose columns
    are usable. Every rule is an equi-join, so candidate pairs grow with block sizes, not n^2.
    """
    prepared = ensure_prepared(df)
    fields = usable_fields(prepared)
    return [rule(keys) for keys in rule_keys(fields, distinct_counts(prepared, fields), wide_rules(prepared, fields))]


def distinct_counts(prepared: pd.DataFrame, fields: Collection[str]) -> dict[str, int]:
    """Distinct values of the job title and extra traits among ``fields`` (for `rule_keys`)."""
    return {c: int(prepared[c].nunique()) for c in fields if c == "title" or c.startswith(EXTRA_PREFIX)}


def rule_coverage(prepared: pd.DataFrame, rules: Sequence[tuple[str, ...]]) -> float:
    """Share of all pairs of rows on which at least one of ``rules`` (key tuples) can fire: both rows
    have every column of the rule. A rule that can only see a tenth of the pairs finds at most a tenth of
    the matches."""
    n = len(prepared)
    if n < 2 or not rules:
        return 0.0
    masks = np.zeros(n, dtype=np.int64)
    for bit, keys in enumerate(rules):
        masks |= prepared[list(keys)].notna().all(axis=1).to_numpy().astype(np.int64) << bit
    values, counts = np.unique(masks, return_counts=True)
    covered = sum(
        int(ca) * int(cb) for a, ca in zip(values, counts, strict=True) for b, cb in zip(values, counts, strict=True)
        if a & b
    ) - int(sum(c for v, c in zip(values, counts, strict=True) if v))  # fmt: skip
    return covered / (n * (n - 1))


def training_rules(fields: Collection[str], comparison_names: Sequence[str]) -> list[tuple[str, ...]]:
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
    chosen: list[tuple[str, ...]] = []
    uncovered = set(comparison_names) - {GUARD}
    for cols in (c for c in candidates if set(c) <= set(fields)):
        trains = {name for name in uncovered if not set(READS.get(name, columns_of(name))) & set(cols)}
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


DETERMINISTIC_KEYS: tuple[tuple[str, ...], ...] = (("email",), ("phone",), ("first_name", "last_name", "birthday"))
"""The deterministic rules' columns (`deterministic_rules`), for `rule_coverage`."""


def deterministic_rules(fields: Collection[str]) -> list[str]:
    """Rules for the prior: pairs they find are taken as (almost all) true matches."""
    rules: list[str] = []
    if "email" in fields:
        rules.append("l.email = r.email")
    if "phone" in fields:
        rules.append("l.phone = r.phone")
    if {"first_name", "last_name", "birthday"} <= set(fields):
        rules.append("l.first_name = r.first_name and l.last_name = r.last_name and l.birthday = r.birthday")
    return rules
