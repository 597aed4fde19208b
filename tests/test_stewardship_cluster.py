"""Human labels as clustering constraints (pure logic of `cdp.identity.cluster.cluster`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdp.identity.cluster import Graph, cluster
from cdp.identity.graph import Rules
from cdp.settings import Settings


def _graph(n: int, links: list[tuple[int, int]] = ()) -> Graph:  # type: ignore[assignment]
    """``n`` record identifiers, each its own profile; ``links``: deterministic links between rows."""
    empty = np.empty(0, dtype=np.int64)
    return Graph(
        ids=np.arange(1, n + 1, dtype=np.int64),
        types=np.zeros(n, dtype=np.int64),
        type_names=["record"],
        values=[f"s:{i}" for i in range(n)],
        profiles=np.arange(n, dtype=np.int64),
        profile_names=[f"p{i}" for i in range(n)],
        shared=np.zeros(n, dtype=bool),
        link_rows=np.array(links, dtype=np.int64).reshape(-1, 2),
        link_alias=np.zeros(len(links), dtype=bool),
        attr_rows=empty,
        attr_kinds=empty,
        attr_kind_names=[],
        attr_values=empty,
        attr_value_names=[],
    )


def _rules(tmp_path: Path) -> Rules:
    return Rules(Settings(db=tmp_path / "x.db"))


def _edges(pairs: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, w = zip(*pairs, strict=True)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64), np.array(w, dtype=np.float64)


@pytest.mark.parametrize("weakest", [0, 1, 2, 3])
def test_cannot_link_cuts_a_chain_of_five_at_its_weakest_edge_only(tmp_path: Path, weakest: int) -> None:
    weights = [12.0, 10.0, 11.0, 13.0]
    weights[weakest] = 6.0
    chain = [(i, i + 1, weights[i]) for i in range(4)]  # 0-1-2-3-4
    # every edge strong enough to pass the chaining guard: only the label can cut the chain
    label, _ = cluster(_graph(5), _edges(chain), _rules(tmp_path), strong_weight=5.0)
    assert len(set(label.tolist())) == 1  # without the label: one person
    label, refused = cluster(_graph(5), _edges(chain), _rules(tmp_path), strong_weight=5.0, cannot=np.array([[0, 4]]))
    left, right = set(range(weakest + 1)), set(range(weakest + 1, 5))
    assert {int(label[r]) for r in left} != {int(label[r]) for r in right}
    assert len({int(label[r]) for r in left}) == 1 and len({int(label[r]) for r in right}) == 1
    assert [(r.rule, r.a, r.b) for r in refused] == [("cannot_link", weakest + 1, weakest + 2)]


def test_cannot_link_splits_a_deterministic_component_at_the_link_that_joins_them(tmp_path: Path) -> None:
    # rows 0-1-2 linked by shared identifiers in that order; a cannot-link between 0 and 2
    label, refused = cluster(
        _graph(3, [(0, 1), (1, 2)]), _edges([(0, 2, 5.0)]), _rules(tmp_path), cannot=np.array([[0, 2]])
    )
    assert label[0] == label[1] != label[2]
    assert {r.rule for r in refused} == {"cannot_link"}


def test_must_link_joins_what_the_model_and_the_chaining_guard_would_not(tmp_path: Path) -> None:
    # two clusters of three records each, joined by one weak edge: the chaining guard refuses it
    pairs = [(0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0), (3, 4, 10.0), (4, 5, 10.0), (3, 5, 10.0), (2, 3, 4.0)]
    label, refused = cluster(_graph(7), _edges(pairs), _rules(tmp_path))
    assert label[0] != label[3] and any(r.rule == "chaining" for r in refused)
    label, _ = cluster(_graph(7), _edges(pairs), _rules(tmp_path), must=np.array([[0, 5], [6, 1]]))
    assert len({int(label[r]) for r in range(7)}) == 1


def test_cannot_link_wins_over_a_chain_of_must_links(tmp_path: Path) -> None:
    label, refused = cluster(
        _graph(3), _edges([(0, 1, 9.0)]), _rules(tmp_path), must=np.array([[1, 2]]), cannot=np.array([[0, 2]])
    )
    assert label[1] == label[2] != label[0]
    assert [r.rule for r in refused] == ["cannot_link"]
