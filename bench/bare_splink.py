"""Bare Splink on FEBRL match rows, trained like `cdp.identity.matching.train` (the baseline of
``bench/identity.py``).

Run as a script (``python bench/bare_splink.py FEBRL.csv THRESHOLD``) it is the cold baseline: a fresh
interpreter that imports what bare Splink needs, reads the CSV, trains, predicts and clusters, prints
its seconds as JSON and exits like any script. ``bench/identity.py`` times that whole process against
``cdp resolve``'s.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import pandas as pd
import pyarrow as pa
from splink import DuckDBAPI, Linker, SettingsCreator

from cdp import record_ids
from cdp.identity.matching import EM_MAX_PAIRS, PRIOR_RECALL, prepare
from cdp.identity.matching.backend import MAX_ITERATIONS, arrow_table
from cdp.identity.matching.spec import (
    blocking_rules,
    choose_comparisons,
    deterministic_rules,
    named_comparisons,
    rule,
    training_rules,
    usable_fields,
)

U_MAX_PAIRS = 1e6  # cdp's matching.train default
SEED = 42  # cdp's matching.train default


def match_rows_from_csv(frame: pd.DataFrame, source: str = "febrl") -> pd.DataFrame:
    """The CSV's canonical columns as Splink match rows (unique ids as cdp names its record nodes)."""
    return pd.DataFrame(
        {
            "unique_id": record_ids.key(source, "") + frame["rec_id"],
            "first_name": frame["first_name"],
            "last_name": frame["last_name"],
            "birthday": frame["birthday"],
            "address_street": frame["address.street"],
            "address_city": frame["address.city"],
            "address_postal_code": frame["address.postal_code"],
            # the other columns cdp imports as traits, and compares as extra traits (x_*)
            **{f"x_{c}": frame[c] for c in ("soc_sec_id", "state", "address_2") if c in frame.columns},
        }
    ).replace("", None)


def _table(prepared: pd.DataFrame) -> pa.Table:
    return arrow_table(prepared)


def _clusters(clustered: Any) -> dict[tuple[str, str], str]:
    frame = clustered.as_pandas_dataframe()
    out = {}
    for uid, cid in zip(frame["unique_id"].astype(str), frame["cluster_id"].astype(str), strict=True):
        found = record_ids.parse_key(uid)
        assert found is not None, uid
        out[found] = cid
    return out


def bare_splink(rows: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Splink alone, trained like `cdp.identity.matching.train`, then predict + cluster."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    prepared = prepare(rows)
    fields = usable_fields(prepared)
    names = [n for n, _ in named_comparisons(fields)]
    comparisons: list[Any] = list(choose_comparisons(prepared))
    rules: list[Any] = list(blocking_rules(prepared))
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
        max_iterations=MAX_ITERATIONS,
        em_convergence=1e-4,
    )
    seconds["prepare"] = time.perf_counter() - t0

    t = time.perf_counter()
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(_table(prepared), table_name="bare_rows"), settings, log_level=logging.WARNING)
    n = len(prepared)
    det = deterministic_rules(fields)
    tick = time.perf_counter()
    if det:
        linker.training.estimate_probability_two_random_records_match(list(det), recall=PRIOR_RECALL)
    seconds["train_prior"] = time.perf_counter() - tick
    tick = time.perf_counter()
    linker.training.estimate_u_using_random_sampling(max_pairs=U_MAX_PAIRS, seed=SEED)
    seconds["train_u"] = time.perf_counter() - tick
    tick = time.perf_counter()
    for cols in training_rules(fields, names):
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule(cols),
            estimate_without_term_frequencies=True,
            max_pairs=EM_MAX_PAIRS,
            record_sample_proportion=min(1.0, max(0.01, 20_000 / n)),
        )
    seconds["train_em"] = time.perf_counter() - tick
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    predicted = linker.inference.predict(threshold_match_probability=threshold)
    seconds["predict"] = time.perf_counter() - t
    t = time.perf_counter()
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(predicted, threshold)
    clusters = _clusters(clustered)
    seconds["cluster"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return {"clusters": clusters, "seconds": {k: round(v, 2) for k, v in seconds.items()}}


if __name__ == "__main__":
    logging.getLogger("splink").setLevel(logging.WARNING)
    started = time.perf_counter()
    frame = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
    result = bare_splink(match_rows_from_csv(frame), float(sys.argv[2]))
    print(json.dumps({"seconds": result["seconds"], "clusters": len(set(result["clusters"].values())),
                      "in_script_s": round(time.perf_counter() - started, 2)}))  # fmt: skip
