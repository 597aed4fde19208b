"""Probabilistic record matching (Fellegi-Sunter, via Splink 5 on DuckDB).

Deterministic rules (same email, phone or user id) live elsewhere; this module finds the fuzzy links
between "match rows" -- one row per CRM contact or identified web user -- and scores them so that the
clustering step can merge them and the UI can explain why.

    model = train(rows)                             # unsupervised: prior, u by sampling, m by EM
    edges = predict(model, rows)                    # all pairs within rows at/above model.threshold
    edges = predict_between(model, new, existing)   # micro-batches against what is already known
    why = explain_pair(model, left_row, right_row)  # the waterfall for one pair

Match rows are a pandas DataFrame with the columns of `FIELDS` (any but ``unique_id`` may be null or
absent; an optional ``source`` column is ignored); `prepare` cleans them.

Edges (the output of `predict` and `predict_between`) have one row per pair, sorted, with columns
``unique_id_l`` < ``unique_id_r``, ``match_weight``, ``match_probability`` and one float column
``mw_<comparison>`` per comparison in the model: its partial match weight (log2 Bayes factor,
term-frequency adjustment included), so that ``match_weight == model.prior_weight + sum(mw_*)``.
Comparison names (`COMPARISON_COLUMNS`): ``first_name``, ``last_name``, ``email``, ``phone``,
``birthday``, ``address_postal_code``, ``address_city``, ``address_street``, ``address_country`` and
``first_name_conflict`` (a fixed veto: 0, or far below -60 when both first names are known and
unrelated and the birthdays differ -- see `cdp.identity.matching.spec`); a model has those whose
fields were filled in its training rows (``model.comparisons``), so with the default fields the edge
columns are ``mw_first_name`` ... ``mw_address_street`` and ``mw_first_name_conflict``.

Layout: cleaning is in `cdp.identity.matching.prepare`, comparison levels and blocking rules in
`cdp.identity.matching.spec`, database sessions and parameter post-processing in
`cdp.identity.matching.backend`; this module trains, stores, scores and explains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import splink
from splink import DuckDBAPI, Linker
from splink.internals.blocking_rule_creator import BlockingRuleCreator
from splink.internals.exceptions import EMTrainingException, SplinkException
from splink.internals.splink_dataframe import SplinkDataFrame

from cdp.identity.matching import usample
from cdp.identity.matching.backend import (
    COLUMNS,
    DUCKDB_MEMORY_LIMIT,
    MAX_ITERATIONS,
    TF_TOP_K,
    Backend,
    Session,
    apply_default_m,
    arm_guard,
    arrow_table,
    as_pandas,
    cap_term_frequencies,
    count_moves_once,
    extra_columns,
    fill_untrained,
    label,
    native_table,
    no_worse_than_else,
    parameter_summary,
    register_term_frequencies,
    round_parameters,
    settings_creator,
    settings_in_dialect,
    term_frequencies,
    with_extras,
)
from cdp.identity.matching.prepare import (
    BLOCK_FLAGS,
    DERIVED,
    EXTRA_PREFIX,
    FIELDS,
    MAX_NAME_BLOCK,
    STRING,
    MatchingError,
    ensure_prepared,
    mark_common_full_names,
    prepare,
    to_arrow_strings,
)
from cdp.identity.matching.spec import (
    COMPARISON_COLUMNS,
    DETERMINISTIC_KEYS,
    MIN_FILL,
    TF_COLUMNS,
    blocking_rules,
    choose_comparisons,
    columns_of,
    deterministic_rules,
    distinct_counts,
    named_comparisons,
    rule,
    rule_coverage,
    rule_keys,
    training_rules,
    usable_fields,
    wide_rules,
)

__all__ = [
    "COMPARISON_COLUMNS",
    "DEFAULT_THRESHOLD",
    "DERIVED",
    "DUCKDB_MEMORY_LIMIT",
    "FIELDS",
    "MAX_NAME_BLOCK",
    "MIN_FILL",
    "MIN_TRAINING_ROWS",
    "STRING",
    "TF_TOP_K",
    "TRAIN_MAX_ROWS",
    "Backend",
    "MatchIndex",
    "MatchModel",
    "MatchingError",
    "OutdatedModel",
    "blocking_rules",
    "choose_comparisons",
    "close_scorers",
    "explain_pair",
    "predict",
    "predict_between",
    "prepare",
    "train",
]

log = logging.getLogger(__name__)
# Splink logs through "splink"; without a handler anywhere Python would print its warnings to stderr.
logging.getLogger("splink").addHandler(logging.NullHandler())


class OutdatedModel(MatchingError):
    """A stored model written by an earlier cdp whose SQL reads columns `prepare` no longer makes;
    it must be retrained (`cdp resolve` does so when the latest model is outdated)."""

    code = "match_model_outdated"


DEFAULT_THRESHOLD = 0.99
"""The link threshold of a model made without scoring its rows (see `train` for how it is chosen)."""

DEFAULT_PRECISION = 0.98
"""The pairwise precision `choose_threshold` aims for unless told otherwise (``CDP_MATCH_PRECISION``)."""

MIN_TRAINING_ROWS = 1000
"""Fewer rows give too few random pairs for u and too few likely duplicates for EM: below it, the
default model (shipped m-probabilities, u and term frequencies from the store)."""

MAX_PRIOR = 0.01
"""At most one pair in a hundred is taken to match (a tiny store's estimate is noise)."""

MIN_DEFAULT_ROWS = 50
"""The default model estimates u from the store's own random pairs: fewer rows than this give too few
pairs to tell a common value from a rare one, and deterministic links alone decide."""

PRIOR_RECALL = 0.6
"""Assumed share of all true links that the deterministic prior rules find."""

TRAIN_MAX_ROWS = 200_000
"""`train` estimates on a uniform sample of at most this many rows (see `train`)."""

EM_MAX_PAIRS = 2e6
"""EM trains on at most about this many blocked pairs per rule (deterministic hash sample of rows)."""


# ============================================================================================ model
@dataclass(frozen=True)
class MatchModel:
    """A trained matching model: everything needed to score rows later without retraining.

    ``settings`` is Splink's model JSON (``linker.misc.save_model_to_json()``, without the random
    ``linker_uid``). ``term_frequencies`` maps each term-frequency-adjusted column to the values that
    were more common than average in the training rows and their share of the non-null values: an
    exact match on such a value weighs less than an average exact match (rarer values weigh the
    average). ``metrics`` holds the prior, m/u/weight per level, EM iterations, timings, fill rates.
    """

    settings: dict[str, Any]
    fields: tuple[str, ...]
    threshold: float
    trained_rows: int
    metrics: dict[str, Any]
    term_frequencies: dict[str, dict[str, float]] = field(default_factory=dict)

    FORMAT: ClassVar[int] = 5
    """1: nicknames in a ``first_name_root`` column (cdp's own list); 2: ``first_name_nicknames``;
    3: the first + last name blocking rule also requires ``full_name_blockable`` (common full names skipped);
    4: city and street have the untrained moved level (a move is counted once, by the postal code);
    5: fuzzy email and birthday levels, company, title and extra traits, a veto that accepts a birthday
    one typo away, a threshold chosen from the data, and the default (untrained) model for small stores."""

    def to_json(self) -> str:
        """Serialise to a JSON string (stable key order: equal models give equal strings)."""
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
    def from_json(cls, text: str | bytes) -> MatchModel:
        """Load a model written by `to_json`; raises `MatchingError` if ``text`` is not one."""
        try:
            body = json.loads(text)
            if isinstance(body, dict) and isinstance(body.get("format"), int) and body["format"] < cls.FORMAT:
                raise OutdatedModel(
                    f"This match model has format {body['format']}; this cdp reads format {cls.FORMAT}: retrain."
                )
            if not isinstance(body, dict) or body.get("format") != cls.FORMAT:
                found = body.get("format") if isinstance(body, dict) else None
                raise MatchingError(f"Unsupported match model format {found!r} (expected {cls.FORMAT}); retrain.")
            model = cls(
                settings=dict(body["settings"]),
                fields=tuple(str(f) for f in body["fields"]),
                threshold=float(body["threshold"]),
                trained_rows=int(body["trained_rows"]),
                metrics=dict(body["metrics"]),
                term_frequencies={
                    str(k): {str(v): float(f) for v, f in d.items()} for k, d in body["term_frequencies"].items()
                },
            )
            _ = model.comparisons, model.prior
            return model
        except MatchingError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MatchingError(
                f"Not a match model JSON document ({exc!r}); pass MatchModel.to_json() output."
            ) from exc

    @property
    def comparisons(self) -> tuple[str, ...]:
        """Comparison names in model order (the ``mw_<name>`` edge columns)."""
        return tuple(str(c["output_column_name"]) for c in self.settings["comparisons"])

    @property
    def extras(self) -> tuple[str, ...]:
        """The extra-trait columns (``x_*``) the model compares."""
        return tuple(c for c in self.fields if c.startswith(EXTRA_PREFIX))

    @property
    def kind(self) -> str:
        """``"trained"`` (EM on the store's own rows) or ``"default"`` (shipped m, u from the store)."""
        return str(self.metrics.get("kind", "trained"))

    @property
    def prior(self) -> float:
        """Probability that two random records match (lambda)."""
        return float(self.settings["probability_two_random_records_match"])

    @property
    def prior_weight(self) -> float:
        """The prior as a match weight, log2(lambda / (1 - lambda))."""
        return _weight(self.prior)

    def fingerprint(self) -> str:
        """Short hash of the model JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def _weight(probability: float) -> float:
    return math.log2(probability / (1.0 - probability))


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
        raise MatchingError(f"threshold is a match probability strictly between 0 and 1; got {threshold!r}.")
    return float(threshold)


def _linker(model: MatchModel, session: Session, sdf: SplinkDataFrame) -> Linker:
    """A Splink linker with the model loaded (settings in the session's dialect, term frequencies)."""
    keys = [tuple(k) for k in model.metrics["blocking_rules"]]
    settings = settings_in_dialect(model.settings, model.comparisons, keys, session.dialect)
    # The settings were made by `train` from the fields `prepare` gives every row (and a stored model's by
    # the version that trained it): validating them would only cost time (a quarter of a second).
    linker = Linker(sdf, settings, log_level=None, validate_settings=False)
    register_term_frequencies(linker, session, model.term_frequencies)
    return linker


# ============================================================================================ train
def train(
    df: pd.DataFrame,
    *,
    threshold: float | None = None,
    precision: float = DEFAULT_PRECISION,
    seed: int = 42,
    max_pairs: float = 1e6,
    max_rows: int | None = TRAIN_MAX_ROWS,
    backend: Backend = "duckdb",
    scores: list[pd.DataFrame] | None = None,
    labelled: Sequence[tuple[str, str]] = (),
) -> MatchModel:
    """Train a matching model on match rows; ``labelled``: pairs of row ids a person said are one person
    (see `blend_labelled_m`).

    With ``scores`` (a list), the edges it scored to choose the threshold -- when that scoring covered all
    rows (no sample) -- are appended to it, at or above `THRESHOLD_FLOOR`, with the rows' own ids: the
    caller can filter them at the model's threshold instead of scoring the same rows again.

    With more than ``max_rows`` rows (default `TRAIN_MAX_ROWS`), it trains on a seeded uniform sample
    of that many; ``model.trained_rows`` still counts all rows (the retraining policy compares it with
    the rows of later runs) and ``metrics["sampled_rows"]`` says how many were used.

    1. `prepare` the rows; choose comparisons (`choose_comparisons`) and prediction blocking rules
       (`blocking_rules`) from the fields that are filled in (>= `MIN_FILL`, >= 2 distinct values).
    2. Rows get ids made from their content (`label_blind`): the same rows give the same model whatever
       their record ids, source names or order (every sample Splink draws is keyed on ids).
    3. Prior (lambda): pairs found by deterministic rules (exact email; exact phone; exact first +
       last name + birthday) over all pairs, divided by an assumed recall of `PRIOR_RECALL`.
    4. u: comparisons of about ``max_pairs`` random pairs (seeded, deterministic sample); a level never
       seen among them gets u = 1 / max_pairs.
    5. m: with at least `MIN_TRAINING_ROWS` rows, expectation maximisation over pairs blocked on
       birthday and on first + last name (more rules if a comparison would stay untrained), at most
       `EM_MAX_PAIRS` pairs each; a level EM never sees gets m = u (weight 0). With fewer rows, or when
       EM cannot run, the *default model*: m from `DEFAULT_M` (shipped with cdp, see
       `cdp/identity/matching/default_m.json`), so a small store gets fuzzy matches from its first records.
       ``model.kind`` says which.
    6. Term frequencies only ever lower a weight: exact matches on values more common than average
       weigh less, rarer values weigh the average (never more -- a typo that happens to be unique
       is no evidence of identity).
    7. The threshold: ``threshold`` if given (``CDP_MATCH_THRESHOLD``), else chosen from the data
       (`choose_threshold`: the lowest threshold whose pairs the model itself expects to be at least
       ``precision`` right), recorded in ``metrics["threshold"]``.

    Raises `MatchingError` with fewer than two rows or fewer than two usable fields.
    """
    started = time.perf_counter()
    if threshold is not None:
        threshold = _check_threshold(threshold)
    given = ensure_prepared(df)
    order = content_order(given)
    original_ids = given["unique_id"].to_numpy(dtype=object)[order]
    prepared = label_blind(given, order)
    total = n = len(prepared)
    if n < MIN_DEFAULT_ROWS:
        raise MatchingError(
            f"Too few rows for a matching model: got {n}, need at least {MIN_DEFAULT_ROWS}.",
            {"rows": n, "min_rows": MIN_DEFAULT_ROWS},
        )
    kind = "trained" if n >= MIN_TRAINING_ROWS else "default"
    if max_rows is not None and n > max(max_rows, MIN_TRAINING_ROWS):
        # Every estimate is a share among pairs (matches among all pairs, agreement levels among random
        # and among blocked pairs): a uniform sample of rows keeps those shares and costs far less.
        prepared = prepared.sample(n=max(max_rows, MIN_TRAINING_ROWS), random_state=seed).reset_index(drop=True)
        n = len(prepared)
    fields = usable_fields(prepared)
    prepared = with_extras(prepared, sorted(f for f in fields if f.startswith(EXTRA_PREFIX)))
    names = [name for name, _ in named_comparisons(fields)]
    if len(names) < 2:
        raise MatchingError(
            f"Cannot train: need at least two usable fields (>= {MIN_FILL:.0%} filled, >= 2 distinct values); "
            f"usable: {sorted(fields)}.",
            {"usable": sorted(fields)},
        )
    det_rules = deterministic_rules(fields)
    keys = rule_keys(fields, distinct_counts(prepared, fields), wide_rules(prepared, fields, total))
    # The prior rules find their share of the matches only among pairs where both rows have their columns.
    coverage = rule_coverage(prepared, [k for k in DETERMINISTIC_KEYS if set(k) <= fields])
    prior_recall = PRIOR_RECALL * max(coverage, 0.01)
    tf_columns = [c for c in (*TF_COLUMNS, *sorted(n for n in names if n.startswith(EXTRA_PREFIX))) if c in names]
    tf = term_frequencies(prepared, tf_columns)
    seconds = {"prepare": time.perf_counter() - started}
    em: list[dict[str, Any]] = []
    fallback: str | None = None

    with Session(backend) as session:
        tick = time.perf_counter()
        rows_sdf = session.register(prepared)
        # the settings are made here from the fields `prepare` gives every row: validating them would only
        # cost time (a fifth of a second), as in `_linker`
        linker = Linker(rows_sdf, settings_creator(names, keys), log_level=None, validate_settings=False)
        register_term_frequencies(linker, session, tf)
        training = linker.training

        prior, prior_source = 0.1 / (n - 1), "fallback: 1 duplicate per 20 rows"
        if det_rules:
            try:
                if session.con is not None:
                    estimate = _prior(session.con, rows_sdf.physical_name, det_rules, prior_recall)
                else:
                    deterministic: list[str | BlockingRuleCreator] = [*det_rules]
                    training.estimate_probability_two_random_records_match(deterministic, recall=prior_recall)
                    estimate = float(linker._settings_obj._probability_two_random_records_match)
                if estimate > 0:
                    prior, prior_source = estimate, "deterministic rules"
            except ValueError:
                pass
        prior = min(max(prior, 1e-9), MAX_PRIOR)
        linker._settings_obj._probability_two_random_records_match = prior
        seconds["prior"] = time.perf_counter() - tick

        tick = time.perf_counter()
        _estimate_u(linker, max_pairs, seed)
        seconds["u"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if kind == "trained":
            try:
                em = _em(training, fields, names, n)
            except MatchingError as exc:
                kind, fallback = "default", str(exc)
        seconds["em"] = time.perf_counter() - tick
        from_labels: dict[str, Any] | None = None
        if kind == "trained" and labelled:
            blind = dict(zip(original_ids.tolist(), prepared_ids(len(original_ids)), strict=True))
            present = set(prepared["unique_id"].tolist())
            pairs = [(blind[a], blind[b]) for a, b in labelled if blind.get(a) in present and blind.get(b) in present]
            if len(pairs) >= MIN_LABELLED_PAIRS:
                from_labels = blend_labelled_m(linker, session, pairs)
        settings = linker.misc.save_model_to_json()

    settings.pop("linker_uid", None)
    if kind == "default":
        apply_default_m(settings)
    fill_untrained(settings, max_pairs)
    no_worse_than_else(settings)
    arm_guard(settings)
    count_moves_once(settings)
    round_parameters(settings)
    tf = cap_term_frequencies(settings, tf)
    metrics: dict[str, Any] = {
        "kind": kind,
        "prior": prior,
        "prior_weight": _weight(prior),
        "prior_source": prior_source,
        "prior_rules": det_rules,
        "prior_recall": round(prior_recall, 5),
        "prior_rule_coverage": round(coverage, 5),
        "em": em,
        "em_max_pairs": EM_MAX_PAIRS,
        "u_max_pairs": max_pairs,
        "sampled_rows": n,
        "seed": seed,
        "comparisons": parameter_summary(settings),
        "blocking_rules": [list(k) for k in keys],
        "fill": {c: round(float(prepared[c].notna().mean()), 4) for c in (*FIELDS[1:], *extra_columns(prepared))},
        "versions": {"splink": splink.__version__, "duckdb": duckdb.__version__},
        "backend": backend,
    }  # fmt: skip
    if fallback:
        metrics["default_because"] = fallback
    if from_labels is not None:
        metrics["m_from_labels"] = from_labels
    model = MatchModel(
        settings=settings,
        fields=tuple(dict.fromkeys(c for name in names for c in columns_of(name))),
        threshold=threshold if threshold is not None else DEFAULT_THRESHOLD,
        trained_rows=total,
        metrics=metrics,
        term_frequencies=tf,
    )
    tick = time.perf_counter()
    if threshold is None:
        keep = scores is not None and n == total
        scored = predict(
            model, prepared, threshold=THRESHOLD_FLOOR, backend=backend, ids=original_ids if keep else None
        )
        chosen = choose_threshold(scored["match_probability"].to_numpy(dtype=np.float64), precision)
        if scores is not None and keep:
            scores.append(scored)
        metrics["threshold"] = {"method": "estimated precision", "target_precision": precision, **chosen}
        model = replace(model, threshold=chosen["value"])
    else:
        metrics["threshold"] = {"method": "setting", "value": threshold}
    seconds["threshold"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    metrics["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return model


def _prior(con: duckdb.DuckDBPyConnection, table: str, rules: Sequence[str], recall: float) -> float:
    """Splink's estimate of the prior from deterministic rules, counted by one DuckDB statement: the pairs
    any of ``rules`` finds, over ``recall``, over all pairs (Splink's own counting of the same pairs, rule
    by rule with the earlier rules excluded, costs a quarter of a second of query building). Raises
    ValueError as Splink does when the rules find more pairs than the recall allows."""
    n = int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
    total = n * (n - 1) / 2
    found = " UNION ".join(
        f"SELECT l.unique_id AS a, r.unique_id AS b FROM {table} l JOIN {table} r"
        f" ON ({rule}) AND l.unique_id < r.unique_id"
        for rule in rules
    )
    observed = int(con.execute(f"SELECT count(*) FROM ({found})").fetchone()[0])  # type: ignore[index]
    if total == 0 or observed > total * recall:
        raise ValueError(f"the deterministic rules found {observed} pairs of {total:.0f}: more than the recall allows")
    return observed / recall / total


def _estimate_u(linker: Linker, max_pairs: float, seed: int) -> None:
    """u by random sampling (Splink's method), over the comparisons whose u is not fixed: the veto's u is
    fixed at 1 and it is the costliest comparison to compute, so computing it on a million sampled pairs only
    to throw the counts away is left out. On DuckDB `usample.estimate_u` computes the same u with all
    comparisons of a chunk in one join."""
    if isinstance(linker._db_api, DuckDBAPI):
        usample.estimate_u(linker, max_pairs, seed)
        return
    owner = linker._settings_obj
    everything = owner.comparisons
    owner.comparisons = [c for c in everything if not all(level._fix_u_probability for level in c.comparison_levels)]
    try:
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    finally:
        owner.comparisons = everything


def _em(training: Any, fields: frozenset[str], names: list[str], n: int) -> list[dict[str, Any]]:
    """m by expectation maximisation on the `training_rules`; raises `MatchingError` when it cannot run.

    A level that no match reaches has its m driven towards 0 with every iteration; once it falls below
    what a float can hold, Splink refuses the session (a ValueError). The session is then run again with
    fewer iterations (`EM_RETRY_ITERATIONS`): the estimates of the other levels have mostly settled by then.
    """
    em: list[dict[str, Any]] = []
    owner = training._linker._settings_obj
    budget = owner.training_settings
    for cols in training_rules(fields, names):
        _bound_weights(training)
        for attempt, iterations_cap in enumerate((MAX_ITERATIONS, *EM_RETRY_ITERATIONS)):
            owner.training_settings = replace(budget, max_iterations=iterations_cap)
            saved = owner.core_model_settings.copy()  # a failed session leaves its filtered comparisons behind
            try:
                em_session = training.estimate_parameters_using_expectation_maximisation(
                    rule(cols),
                    estimate_without_term_frequencies=True,
                    max_pairs=EM_MAX_PAIRS,
                    record_sample_proportion=min(1.0, max(0.01, 20_000 / n)),
                )
                break
            except ValueError as exc:  # an m below what a float holds
                owner.core_model_settings = saved
                if attempt < len(EM_RETRY_ITERATIONS) and "below the minimum" in str(exc):
                    continue
                raise MatchingError(
                    f"EM training blocked on {list(cols)} failed ({exc}).", {"blocking_rule": list(cols)}
                ) from exc
            except (EMTrainingException, SplinkException) as exc:
                raise MatchingError(
                    f"EM training blocked on {list(cols)} failed ({exc}); the rows may have too few likely "
                    "duplicates. Add more rows.",
                    {"blocking_rule": list(cols)},
                ) from exc
            finally:
                owner.training_settings = budget
        iterations = len(em_session._core_model_settings_history) - 1
        em.append(
            {"blocking_rule": list(cols), "iterations": iterations, "converged": iterations < iterations_cap,
             "max_iterations": iterations_cap}
        )  # fmt: skip
    return em


EM_RETRY_ITERATIONS = (10, 4)
"""Iteration caps for an EM session that drove an m below what a float holds (see `_em`)."""

MIN_TRAINING_WEIGHT = -30.0
"""While EM runs, no level's weight is let below this between sessions (see `_bound_weights`)."""


def _bound_weights(training: Any) -> None:
    """Raise every trained level's m to at least ``u * 2**MIN_TRAINING_WEIGHT`` before the next EM session.

    One EM session may drive a level's m to nearly nothing (a weight of -200 and below): the next session,
    which holds that level fixed while it trains others, then sees pairs whose match probability is
    exactly 0.0 in floating point, and a level that only such pairs reach gets m = 0, which Splink cannot
    hold. No single comparison needs to say more than 2**30 against a match (`no_worse_than_else` and the
    veto settle the rest after training)."""
    settings = training._linker._settings_obj
    floor = 2.0**MIN_TRAINING_WEIGHT
    for comparison in settings.comparisons:
        for level in comparison.comparison_levels:
            if level.is_null_level or level._fix_m_probability:
                continue
            m, u = level._m_probability, level._u_probability
            if isinstance(m, float) and isinstance(u, float) and m < u * floor:
                level.m_probability = u * floor


def content_hashes(prepared: pd.DataFrame) -> np.ndarray:
    """A hash of each prepared row's values (not its id, source or blocking flags), as int64."""
    if not len(prepared):
        return np.empty(0, dtype=np.int64)
    content = [c for c in prepared.columns if c not in ("unique_id", "source", *BLOCK_FLAGS)]
    digest: np.ndarray = pd.util.hash_pandas_object(prepared[content].astype(object), index=False).to_numpy()
    return digest.view(np.int64)


def person_facts(prepared: pd.DataFrame) -> dict[str, tuple[str | None, str | None, str | None, str | None]]:
    """unique_id -> (first name, birthday, phone, email user) of the prepared rows that have any of them:
    what the model's first-name veto reads, and the birthdays, for the clustering to judge whole clusters."""
    if not len(prepared) or "first_name" not in prepared.columns:
        return {}
    named = prepared
    columns = []
    for column in ("birthday", "phone", "email_user"):
        values = named[column] if column in named.columns else pd.Series(None, index=named.index, dtype=object)
        columns.append([None if pd.isna(v) else str(v) for v in values.tolist()])
    return {
        uid: (None if pd.isna(first) else str(first), b, p, e)
        for uid, first, b, p, e in zip(named["unique_id"].tolist(), named["first_name"].tolist(), *columns, strict=True)
        if not (pd.isna(first) and b is None and p is None and e is None)
    }


def content_order(prepared: pd.DataFrame) -> np.ndarray:
    """Row positions sorted by `content_hashes`."""
    order: np.ndarray = np.argsort(content_hashes(prepared).view(np.uint64), kind="stable")
    return order


MIN_LABELLED_PAIRS = 20
"""Fewest labelled match pairs (both rows among those trained on) that move the m-probabilities."""
LABEL_PRIOR_PAIRS = 200.0
"""How many labelled pairs EM's estimate counts as (`blend_labelled_m`)."""


def blend_labelled_m(linker: Linker, session: Session, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Move each trained level's m towards the share of labelled match pairs at that level.

    Splink estimates m from pairwise labels (`estimate_m_from_pairwise_labels`); used alone, that would
    replace what EM learnt from every pair with what a few dozen pairs say, and the pairs people label are
    the doubtful ones near the threshold, which disagree more than matches do on the whole. So the two are
    blended as counts: EM's m weighs as `LABEL_PRIOR_PAIRS` pairs, the labels as many as there are
    (100 labels move m a third of the way). A level no labelled pair reached keeps EM's m."""
    table = pa.table({"unique_id_l": [a for a, _ in pairs], "unique_id_r": [b for _, b in pairs]})
    registered = session.register_frame(table)
    levels = [
        (comparison, level, level.m_probability)
        for comparison in linker._settings_obj.comparisons
        for level in comparison._comparison_levels_excluding_null
        if not level._fix_m_probability
    ]
    linker.training.estimate_m_from_pairwise_labels(registered)  # type: ignore[no-untyped-call]
    share = len(pairs) / (len(pairs) + LABEL_PRIOR_PAIRS)
    moved = 0
    for _comparison, level, em_m in levels:
        estimate = level._trained_m_probabilities[-1]["probability"] if level._trained_m_probabilities else None
        if isinstance(estimate, int | float) and isinstance(em_m, int | float):
            level.m_probability = (1 - share) * em_m + share * float(estimate)
            moved += 1
        elif isinstance(em_m, int | float):
            level.m_probability = em_m
    return {"pairs": len(pairs), "weight": round(share, 4), "levels_moved": moved}


def prepared_ids(n: int) -> list[str]:
    """The ids `label_blind` gives to n rows, in order."""
    return [f"r{i:09d}" for i in range(n)]


def label_blind(prepared: pd.DataFrame, order: np.ndarray | None = None) -> pd.DataFrame:
    """The rows sorted by a hash of their content (`content_order`), with ids ``r000000000``... in that order.

    Splink keys its random samples (u, EM) on row ids, and a row sample here is taken in row order: with
    ids and order taken from the content, the same rows train the same model whatever their record ids,
    source names or import order (rows with identical content are interchangeable)."""
    order = content_order(prepared) if order is None else order
    out = prepared.iloc[order].reset_index(drop=True)
    out["unique_id"] = pd.array(prepared_ids(len(out)), dtype=STRING)
    out.attrs = dict(prepared.attrs)
    return out


def _with_ids(edges: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Edges between `label_blind` rows with the rows' own ids (``ids[i]`` for ``r{i}``), in edge order."""
    out = edges.copy()
    for side in ("unique_id_l", "unique_id_r"):
        out[side] = ids[out[side].str.slice(1).astype(np.int64).to_numpy()]
    swap = (out["unique_id_l"] > out["unique_id_r"]).to_numpy()
    left = out["unique_id_l"].to_numpy(dtype=object)
    right = out["unique_id_r"].to_numpy(dtype=object)
    out["unique_id_l"], out["unique_id_r"] = np.where(swap, right, left), np.where(swap, left, right)
    return out.sort_values(["unique_id_l", "unique_id_r"], kind="mergesort").reset_index(drop=True)


THRESHOLD_FLOOR = 0.05
"""Pairs scoring below this are never links; `train` scores its rows down to here to choose a threshold."""

THRESHOLD_GRID = (0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99)
"""Thresholds `choose_threshold` may pick (the last is taken when none reaches the target). Never below 0.8:
on the household corpus the model's own estimate is too hopeful below it (pairs it gives 1 in 5 to be
wrong are wrong more often than that: household members agree on many correlated fields)."""


def choose_threshold(probabilities: np.ndarray, precision: float) -> dict[str, Any]:
    """The lowest threshold of `THRESHOLD_GRID` at which the pairs scoring at or above it are expected
    to be at least ``precision`` right, by the model's own account: the mean match probability of those
    pairs is the share of them it expects to be true. Splink's probabilities are often badly calibrated,
    so a fixed 0.99 is right for some data and throws away half the true pairs on others; this reads
    the operating point off the score distribution of the data at hand.

    Returns ``{"value", "expected_precision", "pairs", "candidate_pairs"}``."""
    p = np.asarray(probabilities, dtype=np.float64)
    for t in THRESHOLD_GRID:
        selected = p[p >= t]
        expected = float(selected.mean()) if len(selected) else 1.0
        if expected >= precision or t == THRESHOLD_GRID[-1]:
            return {
                "value": t,
                "expected_precision": round(expected, 5),
                "pairs": len(selected),
                "candidate_pairs": len(p),
            }
    raise AssertionError("unreachable")


# ============================================================================================ predict
def _edges(model: MatchModel, raw: pd.DataFrame) -> pd.DataFrame:
    """Splink predictions -> the documented edge frame."""
    if raw.empty:
        return _empty_edges(model)
    left = raw["unique_id_l"].astype(str)
    right = raw["unique_id_r"].astype(str)
    swap = (left > right).to_numpy()
    out = pd.DataFrame(
        {
            "unique_id_l": left.where(~swap, right).to_numpy(dtype=object),
            "unique_id_r": right.where(~swap, left).to_numpy(dtype=object),
            "match_weight": raw["match_weight"].astype("float64").to_numpy(),
            "match_probability": raw["match_probability"].astype("float64").to_numpy(),
        }
    )
    for name in model.comparisons:
        weight = raw[f"mw_{name}"].astype("float64").to_numpy()
        if f"mw_tf_adj_{name}" in raw.columns:
            weight = weight + raw[f"mw_tf_adj_{name}"].astype("float64").fillna(0.0).to_numpy()
        out[f"mw_{name}"] = weight
    out = out[out["unique_id_l"] != out["unique_id_r"]].drop_duplicates(["unique_id_l", "unique_id_r"])
    return out.sort_values(["unique_id_l", "unique_id_r"], kind="mergesort").reset_index(drop=True)


def _empty_edges(model: MatchModel) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {
        "unique_id_l": pd.Series([], dtype=object),
        "unique_id_r": pd.Series([], dtype=object),
        "match_weight": pd.Series([], dtype="float64"),
        "match_probability": pd.Series([], dtype="float64"),
    }
    for name in model.comparisons:
        columns[f"mw_{name}"] = pd.Series([], dtype="float64")
    return pd.DataFrame(columns)


def predict(
    model: MatchModel,
    df: pd.DataFrame,
    *,
    threshold: float | None = None,
    backend: Backend = "duckdb",
    ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """All candidate pairs within ``df`` scoring at/above ``threshold`` (default ``model.threshold``).

    Candidates are the pairs that agree on at least one of the model's blocking rules (full names held
    by more than `MAX_NAME_BLOCK` of these rows are not paired on the name alone). Returns the edge
    frame described in the module docstring; with ``ids`` (rows from `label_blind`), the edges name the
    rows by ``ids[i]`` instead of ``r{i}``.
    """
    thr = _check_threshold(model.threshold if threshold is None else threshold)
    prepared = mark_common_full_names(with_extras(ensure_prepared(df), model.extras))  # counted over the rows scored
    if len(prepared) < 2:
        return _empty_edges(model)
    with Session(backend) as session:
        linker = _linker(model, session, session.register(prepared))
        scored = linker.inference.predict(threshold_match_probability=thr, warning_mode="never")
        if session.con is not None:
            return _edges_in_duckdb(model, session.con, scored.physical_name, ids)
        edges = _edges(model, as_pandas(scored))
        return edges if ids is None else _with_ids(edges, ids)


def _edges_in_duckdb(
    model: MatchModel, con: duckdb.DuckDBPyConnection, table: str, ids: np.ndarray | None = None
) -> pd.DataFrame:
    """`_edges` (and `_with_ids` with ``ids``) done by DuckDB on Splink's prediction table: only the columns
    the edge frame holds leave the database, already ordered (a fifth of the time of doing it in pandas)."""
    present = {d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description}
    left, right = "CAST(s.unique_id_l AS VARCHAR)", "CAST(s.unique_id_r AS VARCHAR)"
    source = f"{table} s"
    name = Session.fresh_name("cdp_ids")
    if ids is not None:  # `label_blind` rows: r{i} is the row whose own id is ids[i]
        positions = pa.table({"pos": np.arange(len(ids), dtype=np.int64), "id": pa.array(ids.tolist(), pa.string())})
        native_table(con, name, positions)
        source = (
            f"{table} s JOIN {name} il ON il.pos = CAST(substr(s.unique_id_l, 2) AS BIGINT)"
            f" JOIN {name} ir ON ir.pos = CAST(substr(s.unique_id_r, 2) AS BIGINT)"
        )
        left, right = "il.id", "ir.id"
    weights = []
    for comparison in model.comparisons:
        tf = f" + coalesce(CAST(s.mw_tf_adj_{comparison} AS DOUBLE), 0)" if f"mw_tf_adj_{comparison}" in present else ""
        weights.append(f", CAST(s.mw_{comparison} AS DOUBLE){tf} AS mw_{comparison}")
    names = "".join(f", mw_{comparison}" for comparison in model.comparisons)
    try:
        frame: pd.DataFrame = con.execute(
            f"WITH e AS (SELECT least({left}, {right}) AS a, greatest({left}, {right}) AS b,"
            f" CAST(s.match_weight AS DOUBLE) AS match_weight, CAST(s.match_probability AS DOUBLE) AS match_probability"
            f"{''.join(weights)} FROM {source} WHERE {left} <> {right})"
            f" SELECT DISTINCT ON (a, b) a AS unique_id_l, b AS unique_id_r, match_weight, match_probability{names}"
            " FROM e ORDER BY a, b"
        ).df()
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    if frame.empty:
        return _empty_edges(model)
    return frame


class _Scorer:
    """A DuckDB connection with one model loaded (linker + term frequencies) for repeated small calls.

    It keeps the prepared "existing" rows in a table (``cdp_cache``) keyed by a hash of each row's raw
    values, so each `sync` only cleans rows that are new or changed. Callers hold ``lock``.
    """

    def __init__(self, model: MatchModel) -> None:
        self.model = model
        self.lock = threading.RLock()
        self.session = Session("duckdb")
        empty = prepare(pd.DataFrame({"unique_id": pd.Series([], dtype=object)}))
        self.linker = _linker(model, self.session, self.session.register(empty))
        self._cached = False

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        assert self.session.con is not None
        return self.session.con

    def close(self) -> None:
        self.session.close()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*COLUMNS, *self.model.extras)

    def sync(self, rows: pd.DataFrame) -> None:
        """Make ``cdp_cache`` hold exactly the prepared ``rows``."""
        con = self.con
        raw = _raw_table(rows, self.model.extras)
        con.register("cdp_raw", raw)
        hashed = ", ".join(raw.column_names)
        con.execute(f"CREATE OR REPLACE TEMP TABLE cdp_current AS SELECT hash({hashed}) AS h, * FROM cdp_raw")
        con.unregister("cdp_raw")
        if self._cached:
            con.execute("DELETE FROM cdp_cache WHERE h NOT IN (SELECT h FROM cdp_current)")
            missing = con.sql("SELECT * FROM cdp_current WHERE h NOT IN (SELECT h FROM cdp_cache)").to_arrow_table()
        else:
            missing = con.sql("SELECT * FROM cdp_current").to_arrow_table()
        con.execute("DROP TABLE cdp_current")
        if missing.num_rows or not self._cached:
            fresh = arrow_table(with_extras(prepare(missing.drop_columns(["h"]).to_pandas()), self.model.extras))
            con.register("cdp_fresh", fresh.append_column("h", missing.column("h")))
            columns = f"h, {', '.join(self.columns)}"
            if self._cached:
                con.execute(f"INSERT INTO cdp_cache SELECT {columns} FROM cdp_fresh")
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE cdp_cache AS SELECT {columns} FROM cdp_fresh")
                self._cached = True
            con.unregister("cdp_fresh")

    def score(self, new: pd.DataFrame, threshold: float) -> pd.DataFrame:
        """Edges between prepared ``new`` rows and the cached rows (minus rows with the same ids), and
        among the new rows -- one Splink call: new x (cached + new), self-pairs dropped."""
        if not self._cached:
            self.sync(new.iloc[0:0])
        new_sdf = self.session.register(new)
        table = new_sdf.physical_name
        view = Session.fresh_name("cdp_right")
        commons = {flag: Session.fresh_name("cdp_common") for flag in BLOCK_FLAGS}
        try:
            columns, joins = self._recount_blocks(table, commons)
            self.con.execute(
                f"CREATE TEMP VIEW {view} AS SELECT {columns} FROM cdp_cache c {joins}"
                f" WHERE c.unique_id NOT IN (SELECT unique_id FROM {table})"
                f" UNION ALL SELECT {', '.join(self.columns)} FROM {table}"
            )
            right = self.session.db_api.register(view, table_name=f"{view}_sdf")
            scored = self.linker.inference.predict_between(
                new_sdf, right, threshold_match_probability=threshold, warning_mode="never"
            )
            raw = as_pandas(scored)
            scored.drop_table_from_database_and_remove_from_cache()
        finally:
            self.con.execute(f"DROP VIEW IF EXISTS {view}")
            for common in commons.values():
                self.con.execute(f"DROP TABLE IF EXISTS {common}")
            self.session.forget(new_sdf)
        return _edges(self.model, raw)

    def _recount_blocks(self, table: str, commons: dict[str, str]) -> tuple[str, str]:
        """Count the `BLOCK_FLAGS` (common full names, common last name + initial) over cached + new rows,
        as `predict` would over them all.

        For each flag, writes the new rows' common keys (held by more than the flag's limit of rows) to
        its table in ``commons``, sets the flag on the new rows in ``table``, and returns the column list
        and the joins that give cached rows ``c`` the same flags. Only the new rows' keys need counting:
        a name rule pairs no other key with a new row.
        """
        expressions: dict[str, str] = {}
        joins: list[str] = []
        for i, (flag, ((a, b), limit)) in enumerate(BLOCK_FLAGS.items()):
            common, k = commons[flag], f"k{i}"
            self.con.execute(
                f"CREATE TEMP TABLE {common} AS SELECT x.{a}, x.{b} FROM ("
                f" SELECT {a}, {b} FROM cdp_cache WHERE unique_id NOT IN (SELECT unique_id FROM {table})"
                f" UNION ALL SELECT {a}, {b} FROM {table}) x"
                f" SEMI JOIN {table} n ON x.{a} = n.{a} AND x.{b} = n.{b}"
                f" GROUP BY ALL HAVING count(*) > {limit}"
            )
            value = (
                "CASE WHEN {t}."
                + a
                + " IS NULL OR {t}."
                + b
                + f" IS NULL OR {k}.{a} IS NOT NULL THEN NULL ELSE '1' END"
            )
            self.con.execute(
                f"UPDATE {table} SET {flag} = f.v FROM (SELECT y.unique_id, {value.format(t='y')} AS v"
                f" FROM {table} y LEFT JOIN {common} {k} ON y.{a} = {k}.{a} AND y.{b} = {k}.{b}) f"
                f" WHERE {table}.unique_id = f.unique_id"
            )
            expressions[flag] = f"{value.format(t='c')} AS {flag}"
            joins.append(f"LEFT JOIN {common} {k} ON c.{a} = {k}.{a} AND c.{b} = {k}.{b}")
        columns = ", ".join(expressions.get(c, f"c.{c}") for c in self.columns)
        return columns, " ".join(joins)


def _raw_table(rows: pd.DataFrame, extras: Sequence[str] = ()) -> pa.Table:
    """The raw columns of ``rows`` a model reads (`FIELDS`, ``full_name`` and its ``extras``) as Arrow
    strings, absent ones null: the cache key."""
    n = len(rows)
    columns = (*FIELDS, "full_name", *extras)
    arrays = [
        to_arrow_strings(rows[c].reset_index(drop=True)) if c in rows.columns else pa.nulls(n, pa.string())
        for c in columns
    ]
    return pa.table(dict(zip(columns, arrays, strict=True)))


_SCORERS: OrderedDict[str, _Scorer] = OrderedDict()
_SCORERS_LOCK = threading.Lock()
_MAX_SCORERS = 2


def _scorer_for(model: MatchModel) -> _Scorer:
    key = model.fingerprint()
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            scorer = _SCORERS[key] = _Scorer(model)
            while len(_SCORERS) > _MAX_SCORERS:
                _, old = _SCORERS.popitem(last=False)
                with old.lock:
                    old.close()
        _SCORERS.move_to_end(key)
        return scorer


def close_scorers() -> None:
    """Close the cached scorers' DuckDB connections (the ``cdp`` script calls this before it ends
    without interpreter teardown, so a connection's spill directory is removed)."""
    with _SCORERS_LOCK:
        while _SCORERS:
            _, scorer = _SCORERS.popitem(last=False)
            with scorer.lock:
                scorer.close()


class MatchIndex:
    """Existing match rows loaded once into their own DuckDB connection, for many `predict_between`
    calls with one model (``predict_between(model, new, index)`` or ``index.predict(new)``).

    `predict_between` with a plain DataFrame already reuses cleaned rows between calls (keyed by
    content), so an index only saves the per-call hashing of the existing rows.
    """

    def __init__(self, model: MatchModel, existing: pd.DataFrame) -> None:
        self.model = model
        self._scorer = _Scorer(model)
        self._rows = existing.reset_index(drop=True)
        self._scorer.sync(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def upsert(self, rows: pd.DataFrame) -> None:
        """Add rows, replacing indexed rows with the same ``unique_id``."""
        with self._scorer.lock:
            keep = ~self._rows["unique_id"].astype(str).isin(set(rows["unique_id"].astype(str)))
            self._rows = pd.concat([self._rows[keep], rows], ignore_index=True)
            self._scorer.sync(self._rows)

    def predict(self, new: pd.DataFrame, *, threshold: float | None = None) -> pd.DataFrame:
        """Edges between ``new`` and the indexed rows, and among ``new`` (see `predict_between`)."""
        thr = _check_threshold(self.model.threshold if threshold is None else threshold)
        prepared = with_extras(ensure_prepared(new), self.model.extras)
        if prepared.empty:
            return _empty_edges(self.model)
        with self._scorer.lock:
            return self._scorer.score(prepared, thr)

    def close(self) -> None:
        """Release the DuckDB connection."""
        with self._scorer.lock:
            self._scorer.close()

    def __enter__(self) -> MatchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict_between(
    model: MatchModel,
    new: pd.DataFrame,
    existing: pd.DataFrame | MatchIndex,
    *,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Edges between ``new`` and ``existing`` rows, and among the ``new`` rows, at/above ``threshold``.

    For micro-batches (a few to a few thousand new rows) against everything already known. Rows of
    ``existing`` whose ``unique_id`` is also in ``new`` are ignored (the new version wins). Returns the
    edge frame described in the module docstring; pairs are the ones the model's blocking rules find,
    so the result equals the new rows' share of `predict` on ``existing`` + ``new``.

    The model is loaded once per process (the last two models are kept) and cleaned ``existing`` rows
    are reused between calls, keyed by their content (edited rows are cleaned again). With 100k
    existing rows a call takes well under a second after the first; a `MatchIndex` is faster still.
    """
    if isinstance(existing, MatchIndex):
        if existing.model.fingerprint() != model.fingerprint():
            raise MatchingError("The MatchIndex was built for a different model; build a new index.")
        return existing.predict(new, threshold=threshold)
    thr = _check_threshold(model.threshold if threshold is None else threshold)
    prepared = with_extras(ensure_prepared(new), model.extras)
    if prepared.empty:
        return _empty_edges(model)
    scorer = _scorer_for(model)
    with scorer.lock:
        scorer.sync(existing)
        return scorer.score(prepared, thr)


# ============================================================================================ explain
def explain_pair(model: MatchModel, left: Mapping[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    """The waterfall for one pair of match rows (raw or prepared values).

    Returns ``{"match_weight", "match_probability", "prior_weight", "comparisons": [{"comparison",
    "level", "partial_weight", "left", "right"}, ...]}`` where ``match_weight`` equals
    ``prior_weight`` plus the sum of the partial weights, ``level`` is the comparison level's label
    and ``left`` / ``right`` are the prepared values compared. Rows need no ``unique_id``.
    """
    records = [dict(left), dict(right)]
    left_id, right_id = str(records[0].get("unique_id") or "left"), str(records[1].get("unique_id") or "right")
    if left_id == right_id:
        left_id, right_id = f"{left_id}#left", f"{right_id}#right"
    records[0]["unique_id"], records[1]["unique_id"] = left_id, right_id
    prepared = with_extras(prepare(pd.DataFrame(records)), model.extras)
    scorer = _scorer_for(model)
    with scorer.lock:
        session = scorer.session
        sdf_l, sdf_r = session.register(prepared.iloc[[0]]), session.register(prepared.iloc[[1]])
        try:
            scored = scorer.linker.inference.score_pair(sdf_l, sdf_r)
            row = as_pandas(scored).iloc[0]
            scored.drop_table_from_database_and_remove_from_cache()
        finally:
            session.forget(sdf_l)
            session.forget(sdf_r)
    comparisons = []
    for comparison in model.settings["comparisons"]:
        name = str(comparison["output_column_name"])
        levels = comparison["comparison_levels"]
        labels = _labels_by_vector_value(levels)
        weight = float(row[f"mw_{name}"])
        if f"mw_tf_adj_{name}" in row.index and pd.notna(row[f"mw_tf_adj_{name}"]):
            weight += float(row[f"mw_tf_adj_{name}"])
        comparisons.append(
            {
                "comparison": name,
                "level": labels[int(row[f"gamma_{name}"])],
                "partial_weight": weight,
                "left": _shown(prepared, 0, columns_of(name)),
                "right": _shown(prepared, 1, columns_of(name)),
            }
        )
    return {
        "match_weight": float(row["match_weight"]),
        "match_probability": float(row["match_probability"]),
        "prior_weight": model.prior_weight,
        "comparisons": comparisons,
    }


def _labels_by_vector_value(levels: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Splink numbers non-null levels from n-1 (first) down to 0 (else); the null level is -1."""
    non_null = [lv for lv in levels if not lv.get("is_null_level")]
    labels = {-1: next((label(lv) for lv in levels if lv.get("is_null_level")), "null")}
    for i, level in enumerate(non_null):
        labels[len(non_null) - 1 - i] = label(level)
    return labels


def _shown(prepared: pd.DataFrame, row: int, columns: Sequence[str]) -> str | None:
    """The prepared value(s) a comparison looked at, joined with ", " (None if all null)."""
    values = [str(prepared.at[row, c]) for c in columns if pd.notna(prepared.at[row, c])]
    return ", ".join(values) if values else None
