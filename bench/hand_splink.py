"""Bare Splink with hand-written comparisons: the baseline of ``bench/identity.py --only corpora``.

What a competent person configures in ten minutes for each corpus of `cdp.demo.corpora`, with Splink 5's
library comparisons and nothing of cdp's: light cleaning (lower case, empty -> null, phone digits, a full
name split at a comma or the last space, a space put back into UK postcodes), `NameComparison` with
term-frequency adjustments for names, `DateOfBirthComparison`, `EmailComparison`, `PostcodeComparison`,
Levenshtein or exact levels for the rest; blocking rules on pairs of fields; the prior from
deterministic rules (recall 0.7), u by random sampling (1e6 pairs, seed 42), EM on two blocking rules;
then ``predict`` and ``cluster_pairwise_predictions_at_threshold`` at each threshold of a sweep.

As a script (``python bench/hand_splink.py CORPUS CSV ID_COLUMN OUT.json THRESHOLD...``) it runs in a
fresh interpreter like a ``cdp resolve`` process: reads the CSV, trains, predicts once at the lowest
threshold and clusters at every threshold, and writes the clusters to OUT.json with its seconds:
``pipeline`` (reading the CSV to the end of the clustering at the first threshold given, which is
cdp's) and ``sweep`` (the other clusterings).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
SEED = 42
PRIOR_RECALL = 0.7


def _lower(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str).str.strip().str.lower().str.replace(r"\s+", " ", regex=True)


def _split_full_name(frame: pd.DataFrame) -> pd.DataFrame:
    """``first last`` or ``last, first`` into the empty first/last columns."""
    full = _lower(frame["full_name"])
    comma = full.str.contains(",")
    before, after = full.str.split(",", n=1).str[0].str.strip(), full.str.split(",", n=1).str[-1].str.strip()
    first_word, last_word = full.str.rsplit(" ", n=1).str[0], full.str.rsplit(" ", n=1).str[-1]
    empty = (frame["first_name"] == "") & (frame["surname"] == "") & (full != "")
    frame.loc[empty, "first_name"] = after.where(comma, first_word)[empty]
    frame.loc[empty, "surname"] = before.where(comma, last_word)[empty]
    return frame


def clean(records: pd.DataFrame, corpus: str, id_column: str) -> pd.DataFrame:
    frame = records.copy()
    for column in frame.columns:
        frame[column] = _lower(frame[column])
    if corpus == "historical":
        frame = _split_full_name(frame).drop(columns=["full_name"])
        code = frame["postcode"].str.upper().str.replace(" ", "")
        frame["postcode"] = (code.str[:-3] + " " + code.str[-3:]).where(code.str.len() > 3, code)
    if corpus == "households":
        frame["phone"] = frame["phone"].str.replace(r"\D", "", regex=True).str[-10:]
        frame["postal_code"] = frame["postal_code"].str.upper().str.replace(" ", "")
        frame = frame.drop(columns=["country"])
    frame = frame.rename(columns={id_column: "unique_id"})
    return frame.replace("", None)


def _tf(comparison: Any) -> Any:
    return comparison.configure(term_frequency_adjustments=True)


def spec(corpus: str) -> dict[str, Any]:
    """Comparisons, prediction blocking rules, deterministic rules (for the prior) and EM rules."""
    dob = {"input_is_string": True, "datetime_format": "%Y-%m-%d"}
    if corpus == "typos":
        return {
            "comparisons": [
                _tf(cl.NameComparison("first_name")),
                _tf(cl.NameComparison("surname")),
                cl.DateOfBirthComparison("dob", **dob),
                _tf(cl.LevenshteinAtThresholds("city", 2)),
                cl.EmailComparison("email"),
            ],
            "blocking": [
                block_on("first_name", "surname"),
                block_on("surname", "dob"),
                block_on("first_name", "dob"),
                block_on("email"),
                block_on("surname", "city"),
                block_on("dob"),
            ],
            "deterministic": [
                "l.email = r.email",
                "l.first_name = r.first_name and l.surname = r.surname and l.dob = r.dob",
            ],
            "em": [block_on("first_name", "surname"), block_on("dob")],
        }
    if corpus == "historical":
        return {
            "comparisons": [
                _tf(cl.NameComparison("first_name")),
                _tf(cl.NameComparison("surname")),
                cl.DateOfBirthComparison("dob", **dob),
                cl.PostcodeComparison("postcode"),
                _tf(cl.LevenshteinAtThresholds("birth_place", 2)),
                _tf(cl.LevenshteinAtThresholds("occupation", 2)),
                cl.ExactMatch("sex"),
            ],
            "blocking": [
                block_on("first_name", "surname"),
                block_on("surname", "dob"),
                block_on("first_name", "dob"),
                block_on("postcode", "first_name"),
                block_on("surname", "birth_place"),
                block_on("surname", "postcode"),
                block_on("dob"),
            ],
            "deterministic": [
                "l.first_name = r.first_name and l.surname = r.surname and l.dob = r.dob",
                "l.first_name = r.first_name and l.surname = r.surname and l.postcode = r.postcode"
                " and l.birth_place = r.birth_place",
            ],
            "em": [block_on("first_name", "surname"), block_on("dob")],
        }
    if corpus == "households":
        return {
            "comparisons": [
                _tf(cl.NameComparison("first_name")),
                _tf(cl.NameComparison("last_name")),
                cl.DateOfBirthComparison("birthday", **dob),
                cl.EmailComparison("email"),
                _tf(cl.ExactMatch("phone")),
                cl.LevenshteinAtThresholds("street", [1, 3]),
                _tf(cl.ExactMatch("city")),
                cl.LevenshteinAtThresholds("postal_code", 1),
            ],
            "blocking": [
                block_on("first_name", "last_name"),
                block_on("email"),
                block_on("phone"),
                block_on("birthday"),
                block_on("last_name", "postal_code"),
            ],
            "deterministic": [
                "l.email = r.email and l.first_name = r.first_name",
                "l.first_name = r.first_name and l.last_name = r.last_name and l.birthday = r.birthday",
            ],
            "em": [block_on("first_name", "last_name"), block_on("birthday")],
        }
    raise ValueError(f"no hand-written Splink model for {corpus!r}")


def run(records: pd.DataFrame, corpus: str, id_column: str, thresholds: list[float]) -> dict[str, Any]:
    """Train, predict at the lowest threshold, cluster at each; clusters {threshold: {id: cluster}}."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = clean(records, corpus, id_column)
    chosen = spec(corpus)
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=chosen["comparisons"],
        blocking_rules_to_generate_predictions=chosen["blocking"],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(rows, table_name="hand_rows"), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(chosen["deterministic"], recall=PRIOR_RECALL)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=SEED)
    for rule in chosen["em"]:
        linker.training.estimate_parameters_using_expectation_maximisation(rule, estimate_without_term_frequencies=True)
    seconds["train"] = time.perf_counter() - t0
    tick = time.perf_counter()
    predicted = linker.inference.predict(threshold_match_probability=min(thresholds))
    seconds["predict"] = time.perf_counter() - tick
    clusters: dict[str, dict[str, str]] = {}
    for k, threshold in enumerate(thresholds):
        tick = time.perf_counter()
        frame = linker.clustering.cluster_pairwise_predictions_at_threshold(predicted, threshold).as_pandas_dataframe()
        clusters[str(threshold)] = dict(
            zip(frame["unique_id"].astype(str), frame["cluster_id"].astype(str), strict=True)
        )
        if k == 0:
            seconds["cluster"] = time.perf_counter() - tick
            seconds["pipeline"] = time.perf_counter() - t0
        else:
            seconds["sweep"] = seconds.get("sweep", 0.0) + time.perf_counter() - tick
    return {"clusters": clusters, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


if __name__ == "__main__":
    logging.getLogger("splink").setLevel(logging.WARNING)
    started = time.perf_counter()
    corpus, csv_path, id_column, out_path = sys.argv[1:5]
    thresholds = [float(t) for t in sys.argv[5:]]
    records = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    result = run(records, corpus, id_column, thresholds)
    result["seconds"]["read_and_pipeline"] = round(
        time.perf_counter() - started - result["seconds"].get("sweep", 0.0), 2
    )
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
