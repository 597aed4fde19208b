"""u-probabilities by random sampling: Splink's method and sample, with every comparison of a chunk
computed in one pass over its pairs.

Splink (`linker.training.estimate_u_using_random_sampling`) samples the rows so that about ``max_pairs``
pairs can be made, then, comparison by comparison, counts the pairs at each level: first on a probe
(the right-hand rows in chunk 1 of ``10 * num_chunks``), and when some level has fewer than
``min_count`` pairs there, on chunk 1, 2, ... of ``num_chunks`` until every level has them (or the
chunks run out). Each chunk of each comparison is a join of the sample with itself: for 5 comparisons
about 40 joins, each built, run, read and dropped.

`estimate_u` makes the same sample, the same chunks and the same decisions, and so the same u to the
last bit (the counts are whole numbers, summed exactly), but computes the levels of all comparisons
still counting in one join per chunk: at most ``1 + num_chunks`` joins. Comparisons whose u is fixed
are left out, as before. It needs the DuckDB backend (`cdp.identity.matching.backend.Session` with a
``con``); the Spark backend uses Splink's own.
"""

from __future__ import annotations

import copy
from typing import Any

from splink import Linker
from splink.internals.comparison import Comparison
from splink.internals.constants import LEVEL_NOT_OBSERVED_TEXT
from splink.internals.estimate_u import _estimate_u_comparison_vector_sqls, _rows_needed_for_n_pairs
from splink.internals.m_u_records_to_parameters import append_u_probability_to_comparison_level_trained_probabilities
from splink.internals.pipeline import CTEPipeline
from splink.internals.settings import Settings
from splink.internals.vertically_concatenate import enqueue_df_concat

MIN_COUNT_PER_LEVEL = 100
"""Splink's default: a comparison stops counting once each of its levels has this many pairs."""

NUM_CHUNKS = 10
"""Splink's default number of chunks (the probe is chunk 1 of ten times as many)."""

TRAINING_DESCRIPTION = "estimate u by random sampling"


def estimate_u(linker: Linker, max_pairs: float, seed: int) -> None:
    """Set the u-probabilities of the linker's comparisons (those whose u is not fixed) as Splink's
    `estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)` would, for a dedupe model."""
    settings = linker._settings_obj
    if settings._link_type != "dedupe_only":
        raise ValueError("estimate_u counts pairs within one table (link_type 'dedupe_only').")
    wanted = [c for c in settings.comparisons if not all(level._fix_u_probability for level in c.comparison_levels)]
    if not wanted:
        return
    # as Splink does on its copy of the linker: counting needs no term-frequency columns
    counted = [copy.deepcopy(c) for c in wanted]
    for comparison in counted:
        for level in comparison.comparison_levels:
            level._tf_adjustment_column = None
    sample = _sample(linker, max_pairs, seed)
    try:
        counts = _count(linker._db_api, sample, settings, counted)
    finally:
        sample.drop_table_from_database_and_remove_from_cache()
    for original, comparison in zip(wanted, counted, strict=True):
        found = counts[comparison.output_column_name]
        total = sum(found.values())
        lookup = {
            original.output_column_name: {
                cvv: {"u_probability": n / total if n > 0 else LEVEL_NOT_OBSERVED_TEXT} for cvv, n in found.items()
            }
        }
        for level in original._comparison_levels_excluding_null:
            append_u_probability_to_comparison_level_trained_probabilities(
                level, lookup, original.output_column_name, TRAINING_DESCRIPTION
            )
    linker._populate_m_u_from_trained_values()  # type: ignore[no-untyped-call]


def _sample(linker: Linker, max_pairs: float, seed: int) -> Any:
    """Splink's sample of the input rows for ``max_pairs`` pairs (the same rows, by the same seeded filter)."""
    db_api = linker._db_api
    pipeline = enqueue_df_concat(linker, CTEPipeline())
    pipeline.enqueue_sql("select count(*) as count from __splink__df_concat", "__splink__df_concat_count")
    counted = db_api.sql_pipeline_to_splink_dataframe(pipeline)
    try:
        total = counted.as_record_list()[0]["count"]
    finally:
        counted.drop_table_from_database_and_remove_from_cache()
    proportion = min(1.0, _rows_needed_for_n_pairs(max_pairs) / total) if total else 1.0  # type: ignore[no-untyped-call]
    uid_columns = linker._settings_obj.column_info_settings.unique_id_input_columns
    sample_filter = linker._proportion_sample_sql(proportion, uid_columns, seed=seed)
    pipeline = enqueue_df_concat(linker, CTEPipeline())
    pipeline.enqueue_sql(f"select * from __splink__df_concat where 1=1 {sample_filter}", "__splink__df_concat_sample")
    return db_api.sql_pipeline_to_splink_dataframe(pipeline)


def _count(db_api: Any, sample: Any, settings: Settings, comparisons: list[Comparison]) -> dict[str, dict[int, int]]:
    """Pairs at each non-null level of each comparison, over the chunks Splink's stopping rule takes."""

    def empty(comparison: Comparison) -> dict[int, int]:
        return {int(level.comparison_vector_value): 0 for level in comparison._comparison_levels_excluding_null}

    def enough(found: dict[int, int]) -> bool:
        return min(found.values(), default=0) >= MIN_COUNT_PER_LEVEL

    counts = {c.output_column_name: empty(c) for c in comparisons}
    probe = _chunk(db_api, sample, settings, comparisons, 1, NUM_CHUNKS * 10)
    pending = []
    for comparison in comparisons:
        name = comparison.output_column_name
        _add(counts[name], probe[name])
        if not enough(counts[name]):
            counts[name] = empty(comparison)  # Splink starts again with the normal chunks
            pending.append(comparison)
    for chunk in range(1, NUM_CHUNKS + 1):
        if not pending:
            break
        found = _chunk(db_api, sample, settings, pending, chunk, NUM_CHUNKS)
        for comparison in list(pending):
            name = comparison.output_column_name
            _add(counts[name], found[name])
            if enough(counts[name]):
                pending.remove(comparison)
    return counts


def _add(into: dict[int, int], found: dict[int, int]) -> None:
    for cvv, n in found.items():
        if cvv in into:  # the null level (-1) is not counted
            into[cvv] += n


def _chunk(
    db_api: Any, sample: Any, settings: Settings, comparisons: list[Comparison], chunk: int, chunks: int
) -> dict[str, dict[int, int]]:
    """Pairs at each level of each comparison among the sample's pairs whose right-hand row is in the chunk."""
    info = settings.column_info_settings
    blocking_cols = [name for uid in info.unique_id_input_columns for name in uid.l_r_names_as_l_r]
    for comparison in comparisons:
        blocking_cols += [c for c in comparison._columns_to_select_for_blocking() if c not in blocking_cols]  # type: ignore[no-untyped-call]
    cv_cols = Settings.columns_to_select_for_comparison_vector_values(
        unique_id_input_columns=info.unique_id_input_columns,
        comparisons=comparisons,
        retain_matching_columns=False,
        additional_columns_to_retain=[],
    )
    pipeline = CTEPipeline(input_dataframes=[sample])
    pipeline.enqueue_list_of_sqls(
        _estimate_u_comparison_vector_sqls(
            db_api=db_api,
            input_tablename_l="__splink__df_concat_sample",
            input_tablename_r="__splink__df_concat_sample",
            link_type=settings._link_type,
            source_dataset_input_column=info.source_dataset_input_column,
            unique_id_input_column=info.unique_id_input_column,
            blocking_cols=blocking_cols,
            cv_cols=cv_cols,
            rhs_chunk_num=chunk,
            rhs_num_chunks=chunks,
        )
    )
    gammas = [c._gamma_column_name for c in comparisons]
    flags = ", ".join(f"grouping({g}) as set_{i}" for i, g in enumerate(gammas))
    sets = ", ".join(f"({g})" for g in gammas)
    pipeline.enqueue_sql(
        f"select {', '.join(gammas)}, {flags}, count(*) as n from __splink__df_comparison_vectors "
        f"group by grouping sets ({sets})",
        "__splink__u_counts",
    )
    table = db_api.sql_pipeline_to_splink_dataframe(pipeline)
    try:
        rows = table.as_record_list()
    finally:
        table.drop_table_from_database_and_remove_from_cache()
    out: dict[str, dict[int, int]] = {c.output_column_name: {} for c in comparisons}
    for row in rows:
        for i, (comparison, gamma) in enumerate(zip(comparisons, gammas, strict=True)):
            if row[f"set_{i}"] == 0:  # this row is grouped by this comparison's level
                out[comparison.output_column_name][int(row[gamma])] = int(row["n"])
    return out
