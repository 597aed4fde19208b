"""Database plumbing and parameter post-processing for `cdp.identity.matching`.

A `Session` is one DuckDB connection (or the local Spark session) with Splink's API over it; rows go
in as native tables. The parameter helpers finish a trained Splink model JSON.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
import pyarrow as pa
from splink import DuckDBAPI, Linker, SettingsCreator
from splink.internals.database_api import DatabaseAPISubClass
from splink.internals.splink_dataframe import SplinkDataFrame

from cdp.identity.matching.prepare import DERIVED, EXTRA_PREFIX, FIELDS, STRING, MatchingError
from cdp.identity.matching.spec import GUARD, MOVED_COMPARISONS, comparisons_named, counts_moves, moved_level, rule

Backend = Literal["duckdb", "spark"]

TF_TOP_K = 1000
"""At most this many of the most frequent values per term-frequency column are stored in a model."""

TF_MIN_COUNT = 3
"""A value needs at least this many rows to count as common (see `term_frequencies`)."""

DUCKDB_MEMORY_LIMIT = "1GB"
"""DuckDB memory limit per connection (it spills to disk beyond it)."""

MAX_ITERATIONS = 25
"""EM iterations at most (Splink's default); fewer means it converged."""


COLUMNS = (*FIELDS, *DERIVED)


def extra_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The extra-trait columns (``x_*``) of a frame, sorted."""
    return tuple(sorted(c for c in frame.columns if isinstance(c, str) and c.startswith(EXTRA_PREFIX)))


def with_extras(prepared: pd.DataFrame, extras: Sequence[str]) -> pd.DataFrame:
    """``prepared`` with every column of ``extras`` (missing ones null), and no other extra column."""
    drop = [c for c in extra_columns(prepared) if c not in extras]
    missing = [c for c in extras if c not in prepared.columns]
    if not drop and not missing:
        return prepared
    out = prepared.drop(columns=drop)
    for column in missing:
        out[column] = pd.Series(pd.NA, index=out.index, dtype=STRING)
    out.attrs = dict(prepared.attrs)
    return out


def arrow_table(prepared: pd.DataFrame) -> pa.Table:
    """Prepared rows as Arrow (`COLUMNS` and the extra traits): every column a string, but ``birthday`` a date."""
    columns = [*COLUMNS, *extra_columns(prepared)]
    table = pa.Table.from_pandas(prepared[columns], preserve_index=False)
    table = table.cast(pa.schema([(c, pa.string()) for c in columns]))
    index = table.schema.get_field_index("birthday")
    return table.set_column(index, "birthday", table.column("birthday").cast(pa.date32()))


class Session:
    """A database connection and Splink's API over it."""

    _names = itertools.count()

    @staticmethod
    def fresh_name(prefix: str) -> str:
        """A table or view name no other session of this process uses."""
        return f"{prefix}_{next(Session._names)}"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.con: duckdb.DuckDBPyConnection | None = None
        if backend == "duckdb":
            # Spill to a directory of this session's own under the system temp dir (DuckDB creates it and
            # removes it on close), not to ./.tmp in whatever directory the command was started from.
            spill = os.path.join(tempfile.gettempdir(), self.fresh_name(f"cdp-duckdb-{os.getpid()}"))
            self.con = duckdb.connect(
                ":memory:",
                config={
                    "memory_limit": DUCKDB_MEMORY_LIMIT,
                    "preserve_insertion_order": False,
                    "temp_directory": spill,
                },
            )
            self.db_api: DatabaseAPISubClass = DuckDBAPI(connection=self.con)
        elif backend == "spark":
            self.db_api = spark_api()
        else:
            raise MatchingError(f"Unknown backend {backend!r}; use 'duckdb' or 'spark'.")

    @property
    def dialect(self) -> str:
        return str(self.db_api.sql_dialect.sql_dialect_str)

    def register(self, prepared: pd.DataFrame) -> SplinkDataFrame:
        """Load prepared rows into the database under a fresh name.

        DuckDB copies them into a native table: blocking scans the input once per rule, and native
        scans are much cheaper than re-reading Arrow strings each time.
        """
        name = self.fresh_name("cdp_rows")
        table = arrow_table(prepared)
        if self.backend == "spark":
            spark = self.db_api.spark  # type: ignore[attr-defined]
            frame = table.to_pandas(types_mapper=None).astype(object).where(lambda f: f.notna(), None)
            schema = spark_schema(table.column_names)
            return self.db_api.register(spark.createDataFrame(frame, schema=schema), table_name=name)
        assert self.con is not None
        native_table(self.con, name, table)
        return self.db_api.register(name, table_name=f"{name}_sdf")

    def register_frame(self, frame: pa.Table) -> SplinkDataFrame:
        name = self.fresh_name("cdp_tf")
        if self.backend == "spark":
            spark = self.db_api.spark  # type: ignore[attr-defined]
            return self.db_api.register(spark.createDataFrame(frame.to_pandas()), table_name=name)
        return self.db_api.register(frame, table_name=name)

    def forget(self, sdf: SplinkDataFrame) -> None:
        """Drop a table loaded with `register`."""
        if self.con is not None:
            self.con.execute(f"DROP TABLE IF EXISTS {sdf.physical_name}")

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def native_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Copy an Arrow table into a native DuckDB temp table ``name``."""
    con.register(f"{name}_arrow", table)
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")


def spark_api() -> DatabaseAPISubClass:
    """Splink's Spark API over a local 2-core session with Splink's similarity UDF jar."""
    try:
        from pyspark.sql import SparkSession
        from splink.backends.spark import SparkAPI, similarity_jar_location
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MatchingError("backend='spark' needs pyspark: pip install pyspark.") from exc
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("cdp-matching")
        .config("spark.jars", similarity_jar_location())
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return SparkAPI(spark_session=spark, break_lineage_method="persist")  # type: ignore[no-untyped-call]


def spark_schema(columns: Sequence[str] = COLUMNS) -> Any:
    from pyspark.sql.types import DateType, StringType, StructField, StructType

    return StructType([StructField(c, DateType() if c == "birthday" else StringType()) for c in columns])


def term_frequencies(prepared: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per column: the `TF_TOP_K` most frequent values seen at least `TF_MIN_COUNT` times, with their share of
    non-nulls (a value seen twice in a small store is not known to be common: one person's two records)."""
    out: dict[str, dict[str, float]] = {}
    for column in columns:
        values = prepared[column].dropna()
        counts = values.value_counts()
        counts = counts[counts >= TF_MIN_COUNT]
        frame = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
        frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="mergesort").head(TF_TOP_K)
        total = float(max(len(values), 1))
        out[column] = {str(v): float(c) / total for v, c in zip(frame["value"], frame["count"], strict=True)}
    return out


def register_term_frequencies(linker: Linker, session: Session, tf: Mapping[str, Mapping[str, float]]) -> None:
    """Register the stored term-frequency lookups (values not listed get no adjustment)."""
    for column, mapping in tf.items():
        array: pa.Array = pa.array(list(mapping), pa.string())
        if column == "birthday":
            array = array.cast(pa.date32())
        table = pa.table({column: array, f"tf_{column}": pa.array(list(mapping.values()), pa.float64())})
        linker.table_management.register_term_frequency_lookup(session.register_frame(table), column)


def settings_creator(names: Sequence[str], keys: Sequence[Sequence[str]], *, moved: bool = False) -> SettingsCreator:
    """Splink settings for the comparisons ``names`` and blocking keys ``keys``; ``moved`` as in
    `cdp.identity.matching.spec.comparisons_named`."""
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[comparison for _, comparison in comparisons_named(names, moved=moved)],
        blocking_rules_to_generate_predictions=[rule(k) for k in keys],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=True,
        max_iterations=MAX_ITERATIONS,
        em_convergence=1e-4,
    )


LEVEL_PARAMETERS = ("m_probability", "u_probability", "tf_minimum_u_value", "fix_m_probability", "fix_u_probability")


def settings_in_dialect(
    stored: Mapping[str, Any], comparisons: Sequence[str], keys: Sequence[Sequence[str]], dialect: str
) -> dict[str, Any]:
    """A model's Splink settings in ``dialect``: as stored, or rebuilt for the dialect (same comparisons
    and blocking rules, regenerated SQL) with the stored parameters copied level by level."""
    if stored.get("sql_dialect") == dialect:
        return copy.deepcopy(dict(stored))
    fresh = settings_creator(comparisons, keys, moved=True).create_settings_dict(dialect)
    if [len(c["comparison_levels"]) for c in fresh["comparisons"]] != [
        len(c["comparison_levels"]) for c in stored["comparisons"]
    ]:  # a model without moved levels
        fresh = settings_creator(comparisons, keys).create_settings_dict(dialect)
    for new_cc, old_cc in zip(fresh["comparisons"], stored["comparisons"], strict=True):
        for new_level, old_level in zip(new_cc["comparison_levels"], old_cc["comparison_levels"], strict=True):
            for key in LEVEL_PARAMETERS:
                if key in old_level:
                    new_level[key] = old_level[key]
    fresh["probability_two_random_records_match"] = stored["probability_two_random_records_match"]
    fresh["sql_dialect"] = dialect
    return dict(fresh)


def count_moves_once(settings: dict[str, Any]) -> None:
    """Insert the untrained `moved_level` before the else level of the city and street comparisons
    (only when the postal code is compared too), after training."""
    if not counts_moves([str(c["output_column_name"]) for c in settings["comparisons"]]):
        return
    dialect = str(settings["sql_dialect"])
    for comparison in settings["comparisons"]:
        name = str(comparison["output_column_name"])
        if name in MOVED_COMPARISONS:
            levels = comparison["comparison_levels"]
            what = name.removeprefix("address_")
            levels.insert(len(levels) - 1, moved_level(what).create_level_dict(dialect))


def fill_untrained(settings: dict[str, Any], u_pairs: float) -> None:
    """Explicit parameters for levels training never observed (u = 1 / u_pairs; m = u, i.e. weight 0)."""
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            if not isinstance(level.get("u_probability"), int | float) or level["u_probability"] <= 0:
                level["u_probability"] = 1.0 / max(u_pairs, 1.0)
            if not isinstance(level.get("m_probability"), int | float) or level["m_probability"] <= 0:
                level["m_probability"] = level["u_probability"]


def round_parameters(settings: dict[str, Any]) -> None:
    """Round m and u to 12 significant digits: DuckDB's parallel sums differ in the last bits between
    runs, and the same rows and seed must give the same model JSON."""
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            for key in ("m_probability", "u_probability", "tf_minimum_u_value"):
                if isinstance(level.get(key), float):
                    level[key] = float(f"{level[key]:.12g}")


def fixed(comparison: Mapping[str, Any]) -> bool:
    return any(level.get("fix_m_probability") for level in comparison["comparison_levels"])


def arm_guard(settings: dict[str, Any]) -> None:
    """Set the veto weight to outweigh the largest possible sum of all other partial weights."""
    top = 0.0
    for comparison in settings["comparisons"]:
        if fixed(comparison):
            continue
        weights = [
            math.log2(float(lv["m_probability"]) / float(lv["u_probability"]))
            for lv in comparison["comparison_levels"]
            if not lv.get("is_null_level")
        ]
        top += max(0.0, *weights)
    for comparison in settings["comparisons"]:
        if comparison["output_column_name"] == GUARD:
            veto = comparison["comparison_levels"][0]
            veto["m_probability"] = float(veto["u_probability"]) * 2.0 ** -(math.ceil(top) + 20)


def no_worse_than_else(settings: dict[str, Any]) -> None:
    """A partial agreement is never weaker evidence than no agreement: weight(level) >= weight(else).

    EM sometimes drives a rare fuzzy level's m to ~0 (weight -60 or worse), which would veto true
    matches with one typo; such levels are raised to the else level's weight and m renormalised.
    """
    for comparison in settings["comparisons"]:
        if fixed(comparison):
            continue
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        ratio = float(levels[-1]["m_probability"]) / float(levels[-1]["u_probability"])
        for level in levels[:-1]:
            level["m_probability"] = max(float(level["m_probability"]), float(level["u_probability"]) * ratio)
        total = sum(float(level["m_probability"]) for level in levels)
        for level in levels:
            level["m_probability"] = float(level["m_probability"]) / total


def cap_term_frequencies(settings: dict[str, Any], tf: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Term frequencies only lower weights: each TF level's minimum u is its own u; rarer values are dropped."""
    kept: dict[str, dict[str, float]] = {}
    for comparison in settings["comparisons"]:
        for level in comparison["comparison_levels"]:
            column = level.get("tf_adjustment_column")
            if not column or level.get("is_null_level"):
                continue
            u = float(level["u_probability"])
            level["tf_minimum_u_value"] = u
            kept[column] = {value: f for value, f in tf.get(column, {}).items() if f > u}
    return kept


def parameter_summary(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for comparison in settings["comparisons"]:
        levels = []
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            m, u = float(level["m_probability"]), float(level["u_probability"])
            levels.append(
                {"level": label(level), "m": round(m, 6), "u": round(u, 9), "weight": round(math.log2(m / u), 3)}
            )
        out.append({"comparison": comparison["output_column_name"], "levels": levels})
    return out


def label(level: Mapping[str, Any]) -> str:
    return str(level.get("label_for_charts") or level["sql_condition"])


def as_pandas(sdf: SplinkDataFrame) -> pd.DataFrame:
    frame: pd.DataFrame = sdf.as_pandas_dataframe()  # type: ignore[no-untyped-call]
    return frame


DEFAULT_M_FILE = Path(__file__).with_name("default_m.json")
"""The default model's m-probabilities (see `apply_default_m`)."""


@functools.cache
def default_m() -> dict[str, Any]:
    """The shipped m-probabilities: ``{"comparisons": {name: {level label: m}}, "text": {label: m}}``."""
    loaded: dict[str, Any] = json.loads(DEFAULT_M_FILE.read_text(encoding="utf-8"))
    return loaded


def apply_default_m(settings: dict[str, Any]) -> None:
    """Set each trained comparison's m-probabilities from `default_m` (the default model).

    A comparison's levels take the shipped m of the level with the same label; extra traits, company
    and title take the shared ``text`` levels; a level the file does not know gets a share of what is
    left, and the m of each comparison is renormalised to sum to 1.
    """
    shipped = default_m()
    for comparison in settings["comparisons"]:
        if fixed(comparison):
            continue
        name = str(comparison["output_column_name"])
        known: Mapping[str, float] = shipped["comparisons"].get(name) or shipped["text"]
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        found = [known.get(label(lv)) for lv in levels]
        missing = [i for i, m in enumerate(found) if m is None]
        if missing:
            rest = max(1.0 - sum(m for m in found if m is not None), 0.05)
            for i in missing:
                found[i] = rest / len(missing)
        total = sum(float(m) for m in found if m is not None)
        for level, m in zip(levels, found, strict=True):
            level["m_probability"] = float(m or 0.0) / total


def default_m_from(models: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """A `default_m` document: the mean m of each level over trained models' settings (the geometric mean
    of m for every level, renormalised), and for ``text`` the mean over company, title and extra traits."""
    per: dict[str, dict[str, list[float]]] = {}
    text: dict[str, list[float]] = {}
    for settings in models:
        for comparison in settings["comparisons"]:
            if fixed(comparison):
                continue
            name = str(comparison["output_column_name"])
            for level in comparison["comparison_levels"]:
                if level.get("is_null_level"):
                    continue
                m = max(float(level["m_probability"]), 1e-6)
                per.setdefault(name, {}).setdefault(label(level), []).append(m)
                if name in ("company", "title") or name.startswith(EXTRA_PREFIX):
                    text.setdefault(label(level), []).append(m)

    def mean(values: Mapping[str, list[float]]) -> dict[str, float]:
        geo = {k: math.exp(sum(math.log(v) for v in vs) / len(vs)) for k, vs in values.items()}
        total = sum(geo.values())
        return {k: round(v / total, 6) for k, v in geo.items()}

    comparisons = {name: mean(levels) for name, levels in sorted(per.items())
                   if name not in ("company", "title") and not name.startswith(EXTRA_PREFIX)}  # fmt: skip
    return {"sources": list(sources), "comparisons": comparisons, "text": mean(text) if text else {}}
