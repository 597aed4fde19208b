"""Clusters from identity evidence, and the stable mapping of clusters onto existing profile ids.

Pure logic, no database. The graph comes as columns (`Graph`: a run may hold millions of
identifiers). ``cluster`` applies the deterministic links as if replayed in the order they were seen
under the same merge protection as the real-time graph: links form connected components (scipy), and
only a component that merge protection could refuse something in is replayed link by link. Then it
adds probabilistic edges strongest first, refusing a join of two multi-record clusters that only a
few weak edges support (so one borderline pair cannot chain two people together); pairs scored below
the match threshold but above the support threshold join a record to a cluster only when they
corroborate each other (the record resembles several of its records). ``changing`` picks
the identifiers whose profile and cluster are not one-to-one, and ``plan`` maps their clusters onto
the current profiles so an unchanged cluster keeps its id, joined clusters keep the oldest id, and a
part that leaves a profile gets a new id.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from cdp.identity import names
from cdp.identity.graph import PRIORITY, Rules, compatible_birthdays

MATCHABLE = ("record", "user_id")


@dataclass(slots=True)
class Node:
    id: int
    type: str
    value: str
    profile_id: str
    shared: bool = False
    attributes: dict[str, set[str]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    weight: float
    probability: float


@dataclass
class Refusal:
    rule: str
    message: str
    a: int
    b: int


class Components:
    """Union-find that keeps, per cluster, identifier counts by type, attributes and matchable nodes.

    State is kept only for roots of clusters with more than one node; a lone node's is derived from the
    node itself when asked for (most nodes never join anything, and a run may hold millions of them).
    """

    def __init__(self, nodes: dict[int, Node]) -> None:
        self.nodes = nodes  # by id
        self.parent: dict[int, int] = {}  # non-roots only
        self._counts: dict[int, Counter[str]] = {}
        self._attrs: dict[int, dict[str, set[str]]] = {}
        self._members: dict[int, list[int]] = {}

    def find(self, x: int) -> int:
        root = x
        while (up := self.parent.get(root)) is not None:
            root = up
        while (up := self.parent.get(x)) is not None and up != root:
            self.parent[x], x = root, up
        return root

    def counts(self, root: int) -> Counter[str]:
        found = self._counts.get(root)
        return found if found is not None else Counter({self.nodes[root].type: 1})

    def attrs(self, root: int) -> dict[str, set[str]]:
        """A root's attributes (read only: a lone node's are the node's own)."""
        found = self._attrs.get(root)
        return found if found is not None else self.nodes[root].attributes

    def members(self, root: int) -> list[int]:
        found = self._members.get(root)
        return found if found is not None else [root]

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if len(self.members(ra)) < len(self.members(rb)):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self._counts.setdefault(ra, self.counts(ra)).update(self.counts(rb))
        self._counts.pop(rb, None)
        if ra not in self._attrs:
            self._attrs[ra] = {k: set(v) for k, v in self.nodes[ra].attributes.items()}
        attrs = self._attrs[ra]
        for kind, values in self.attrs(rb).items():
            attrs.setdefault(kind, set()).update(values)
        self._attrs.pop(rb, None)
        self._members.setdefault(ra, [ra]).extend(self.members(rb))
        self._members.pop(rb, None)
        return ra


@dataclass
class Graph:
    """The identity graph as columns: row ``r`` is one identifier; rows are in ascending id order.

    A run holds millions of identifiers: they stay in arrays, and `node` makes a `Node` only for the
    rows that need one (those in conflicting or changing clusters).
    """

    ids: np.ndarray  # int64 identifier ids, ascending
    types: np.ndarray  # int codes into type_names
    type_names: list[str]
    values: list[str]
    profiles: np.ndarray  # int codes into profile_names
    profile_names: list[str]
    shared: np.ndarray  # bool
    link_rows: np.ndarray  # (m, 2) rows of each deterministic link's identifiers, in the order seen
    link_alias: np.ndarray  # bool per link
    attr_rows: np.ndarray  # row of each identifier attribute
    attr_kinds: np.ndarray  # int codes into attr_kind_names
    attr_kind_names: list[str]
    attr_values: np.ndarray  # int codes into attr_value_names
    attr_value_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def matchable(self) -> np.ndarray:
        """Mask of the rows whose identifiers can be match rows (`MATCHABLE` types)."""
        return np.isin(self.types, [self.type_names.index(t) for t in MATCHABLE if t in self.type_names])

    def rows_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of identifier ids; -1 for ids not in the graph."""
        wanted = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, wanted)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = len(self.ids) > 0 and self.ids[pos] == wanted
        return np.where(found, pos, -1)

    def attributes(self, rows: Iterable[int]) -> dict[int, dict[str, set[str]]]:
        """Attributes by row, for the rows given that have any."""
        wanted = np.fromiter(rows, dtype=np.int64)
        out: dict[int, dict[str, set[str]]] = {}
        pick = np.flatnonzero(np.isin(self.attr_rows, wanted))
        for row, kind, value in zip(
            self.attr_rows[pick].tolist(), self.attr_kinds[pick].tolist(), self.attr_values[pick].tolist(), strict=True
        ):
            out.setdefault(row, {}).setdefault(self.attr_kind_names[kind], set()).add(self.attr_value_names[value])
        return out

    def nodes(self, rows: Iterable[int], *, by_row: bool = False) -> list[Node]:
        """`Node` objects for rows (``id`` the identifier id, or the row itself with ``by_row``)."""
        picked = list(rows)
        attrs = self.attributes(picked)
        none: dict[str, set[str]] = {}
        return [
            Node(
                r if by_row else int(self.ids[r]),
                self.type_names[self.types[r]],
                self.values[r],
                self.profile_names[self.profiles[r]],
                bool(self.shared[r]),
                attrs.get(r, none),
            )
            for r in picked
        ]


def _violating(graph: Graph, comp: np.ndarray, ncomp: int, rules: Rules) -> np.ndarray:
    """Components of the deterministic links that merge protection could refuse something in.

    The checks are monotone (identifier counts only grow, all first names and all birthdays must be
    pairwise compatible), so a component that passes them as a whole passes every join on the way:
    replaying its links one by one would accept them all.
    """
    size = np.bincount(comp, minlength=ncomp)
    bad = np.zeros(ncomp, dtype=bool)
    ntypes = len(graph.type_names)
    counts = np.bincount(comp * ntypes + graph.types, minlength=ncomp * ntypes).reshape(ncomp, ntypes)
    for kind, limit in rules.limits.items():
        if kind in graph.type_names:
            bad |= counts[:, graph.type_names.index(kind)] > limit
    if rules.guard_attributes and len(graph.attr_rows):
        attr_comp = comp[graph.attr_rows]
        for kind in ("birthday", "first_name"):
            if kind not in graph.attr_kind_names:
                continue
            mine = graph.attr_kinds == graph.attr_kind_names.index(kind)
            # distinct (component, value) pairs, sorted by component
            pairs = np.unique(attr_comp[mine] * len(graph.attr_value_names) + graph.attr_values[mine])
            comps, values = np.divmod(pairs, len(graph.attr_value_names))
            several = np.bincount(comps, minlength=ncomp) > 1
            fits = compatible_birthdays if kind == "birthday" else names.compatible
            check = np.flatnonzero(several & ~bad)
            starts, ends = np.searchsorted(comps, check), np.searchsorted(comps, check, side="right")
            for c, lo, hi in zip(check.tolist(), starts.tolist(), ends.tolist(), strict=True):
                seen = [graph.attr_value_names[v] for v in values[lo:hi].tolist()]
                if not all(fits(a, b) for i, a in enumerate(seen) for b in seen[i + 1 :]):
                    bad[c] = True
    return bad & (size > 1)


def _replay(
    graph: Graph,
    rows: np.ndarray,
    links: np.ndarray,
    alias: np.ndarray,
    rules: Rules,
    refused: list[Refusal],
    partners: dict[int, set[int]] | None = None,
) -> dict[int, int]:
    """Links replayed one by one, in the order seen, under merge protection and the cannot-links
    (``partners``: row -> rows it must not share a cluster with); row -> its cluster's root."""
    comps = Components({n.id: n for n in graph.nodes(rows.tolist(), by_row=True)})
    partners = partners or {}
    for (a, b), is_alias in zip(links.tolist(), alias.tolist(), strict=True):
        ra, rb = comps.find(a), comps.find(b)
        if ra == rb:
            continue
        if partners and _kept_apart(comps.members(ra), rb, partners, comps.find):
            refused.append(Refusal("cannot_link", CANNOT_LINK_MESSAGE, int(graph.ids[a]), int(graph.ids[b])))
            continue
        decision = rules.check(comps.counts(ra), comps.counts(rb), comps.attrs(ra), comps.attrs(rb), alias=is_alias)
        if decision.ok:
            comps.union(ra, rb)
        else:
            refused.append(Refusal(decision.rule, decision.message, int(graph.ids[a]), int(graph.ids[b])))
    return {r: comps.find(r) for r in rows.tolist()}


def _replay_keys(graph: Graph, rows: np.ndarray, content: np.ndarray, matched: np.ndarray | None) -> np.ndarray:
    """A key for each of ``rows`` from what it holds, not its id or arrival: a match row's content hash, else a
    stable hash of its type and value (a record's value names its source, so records use their content)."""
    types, values = graph.types[rows].tolist(), [graph.values[r] for r in rows.tolist()]
    key = np.fromiter(
        (zlib.crc32(f"{graph.type_names[t]}:{v}".encode()) for t, v in zip(types, values, strict=True)),
        dtype=np.int64,
        count=len(rows),
    )
    if matched is not None:
        key[matched[rows]] = content[rows][matched[rows]]
    return key


CANNOT_LINK_MESSAGE = "a person labelled these identifiers' records as different people (a cannot-link)"


def _kept_apart(members: Iterable[int], other: int, partners: dict[int, set[int]], find: Callable[[int], int]) -> bool:
    """Does a row of ``members`` have a cannot-link partner in the cluster whose root is ``other``?"""
    return any(find(p) == other for m in members if m in partners for p in partners[m])


def _partners(pairs: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for x, y in pairs.tolist():
        if x != y:
            out[x].add(y)
            out[y].add(x)
    return dict(out)


def cluster(
    graph: Graph,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    rules: Rules,
    *,
    chaining_density: float = 0.5,
    strong_weight: float = np.inf,
    matched: np.ndarray | None = None,
    content: np.ndarray | None = None,
    link_weight: float = -np.inf,
    must: np.ndarray | None = None,
    cannot: np.ndarray | None = None,
    facts: dict[int, Facts] | None = None,
) -> tuple[np.ndarray, list[Refusal]]:
    """Each row's cluster (the smallest row in it), and the links/edges merge protection refused.

    ``edges``: rows of both ends and match weights of the probabilistic edges. Deterministic links are
    replayed (see ``content``), then edges are added strongest first; an edge that would
    join two clusters of several matchable identifiers each is refused unless its match weight is at
    least ``strong_weight`` or enough record pairs between them match (`chain_support_needed`: at
    least ``chaining_density`` times the smaller cluster's size, and two; edges come strongest first,
    so the edge that would join them is the strongest between them).
    ``matched`` (a mask over rows) says which identifiers were match rows: only those count as a
    cluster's members in that share (a ``user_id`` with no traits to match on was never compared, so
    it can support no edge). Without it, every record and ``user_id`` counts. ``content`` (an int64 per
    row, from the row's content rather than its id or arrival) breaks ties between equally strong edges, so
    that they do not depend on source names or arrival; without it, identifier ids decide. With it, the
    deterministic links of a component that merge protection or a cannot-link must cut are replayed in
    content order too (`_replay_keys`), so the same rows give the same profiles whatever order they came
    in; a run may then decide such a component once differently from real-time linking, which saw the
    links in arrival order, and every later run keeps it.

    ``link_weight``: edges weaker than this are *corroborating* edges, not links. One of them joins two
    clusters only when both of its ends are source records and the corroborating edges between the two
    clusters (weak or not) are as many as `corroboration_needed` asks -- so a lone pair never joins on it,
    and a record joins a person only by resembling at least two of their records. A person with many noisy
    records (a register, a census) has most of their pairs below a precision-first threshold, yet each
    noisy record resembles several of the others; two namesakes' records resemble each other once per
    pair, and a ``user_id``'s match row (the latest traits its events carried) repeats what that user's
    records say, so neither counts as corroboration. Weak edges that join nothing are not refusals (they
    were never links).

    Human labels (`cdp.identity.labels`), as ``(k, 2)`` arrays of rows: ``must`` pairs are joined after the
    deterministic links and before any match edge, whatever merge protection, the chaining guard or the
    model say. ``cannot`` pairs never end in one cluster: a deterministic component that holds both ends
    is replayed link by link and the link that would first join them is refused; then every edge (match
    edges strongest first, must-links before them) that would join the two sides is refused. Since edges
    come strongest first, the edges refused are the weakest on every path between the two records: a
    chain a-b-c-d-e with a cannot-link between a and e is cut at its weakest edge, and nowhere else.

    ``facts`` (by row: each match row's first name, birthday, phone and email user) let the clustering
    judge whole clusters, not only the pair scored (`apart`): no match edge joins two clusters when a record
    of one and a record of the other are two people by the model's first-name veto (twins and spouses share
    a surname, an address, a landline, a family email and sometimes a birthday, so one of their records can
    outscore the first names on another; their other records, with their own mobile or email, tell them
    apart), nor two clusters of several records whose usual birthdays differ (namesakes in a register with
    the same birthplace and trade resemble each other record for record). Edges between two unrelated first
    names come last, after the consistent evidence has shaped the clusters.
    """
    from scipy.sparse import coo_matrix  # a fifth of a second to import: only when clustering
    from scipy.sparse.csgraph import connected_components

    n = len(graph)
    refused: list[Refusal] = []
    a, b = graph.link_rows[:, 0], graph.link_rows[:, 1]
    usable = ~(graph.shared[a] | graph.shared[b])
    a, b, alias = a[usable], b[usable], graph.link_alias[usable]
    ncomp, comp = connected_components(
        coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n)), directed=False
    )
    comp = comp.astype(np.int64)
    _, first_row = np.unique(comp, return_index=True)  # rows ascend: a component's first row is its smallest
    label = first_row[comp]
    bad = _violating(graph, comp, ncomp, rules)
    cannot = np.empty((0, 2), dtype=np.int64) if cannot is None else np.asarray(cannot, dtype=np.int64).reshape(-1, 2)
    partners = _partners(cannot)
    if len(cannot):
        together = comp[cannot[:, 0]] == comp[cannot[:, 1]]
        bad[comp[cannot[together, 0]]] = True
    if bad.any():
        in_bad = bad[comp]
        rows = np.flatnonzero(in_bad)
        mine = in_bad[a]
        links, link_alias = np.stack([a[mine], b[mine]], axis=1), alias[mine]
        if content is not None:  # in content order: the same rows give the same profiles whatever their order
            ends, where = np.unique(links, return_inverse=True)
            key = _replay_keys(graph, ends, content, matched)[where.reshape(links.shape)]
            ka, kb = key[:, 0], key[:, 1]
            order = np.lexsort((np.maximum(ka, kb), np.minimum(ka, kb)))
            links, link_alias = links[order], link_alias[order]
        root = _replay(graph, rows, links, link_alias, rules, refused, partners)
        smallest: dict[int, int] = {}
        for r in rows.tolist():  # rows ascend: the first row seen of a cluster is its smallest
            smallest.setdefault(root[r], r)
        label[rows] = [smallest[root[r]] for r in rows.tolist()]
    if matched is None:
        matched = graph.matchable()
    guard = (chaining_density, strong_weight, link_weight)
    tiebreak = graph.ids if content is None else content
    if must is not None and len(must):
        must = np.asarray(must, dtype=np.int64).reshape(-1, 2)
        ea, eb, weight = edges
        edges = (
            np.concatenate([must[:, 0], np.asarray(ea, dtype=np.int64)]),
            np.concatenate([must[:, 1], np.asarray(eb, dtype=np.int64)]),
            np.concatenate([np.full(len(must), np.inf), np.asarray(weight, dtype=np.float64)]),
        )
    return _add_edges(graph, label, edges, rules, refused, guard, matched, tiebreak, partners, facts), refused


def _add_edges(
    graph: Graph,
    label: np.ndarray,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray],
    rules: Rules,
    refused: list[Refusal],
    guard: tuple[float, float, float],
    matchable: np.ndarray,
    tiebreak: np.ndarray,
    partners: dict[int, set[int]] | None = None,
    facts: dict[int, Facts] | None = None,
) -> np.ndarray:
    """Probabilistic edges onto the clusters ``label`` (smallest row of each), strongest first. An edge of
    infinite weight is a must-link: merge protection and the chaining guard do not apply to it;
    the cannot-links (``partners``) apply to every edge."""
    ea, eb, weight = edges
    if not len(ea):
        return label
    chaining_density, strong_weight, link_weight = guard
    # Edges whose two records name two unrelated first names come after all the others: they join only
    # clusters that the consistent evidence has already shaped, so that a twin's landline-only record is
    # judged with everything else known of both twins.
    late = np.zeros(len(ea), dtype=bool)
    if facts:
        late = np.fromiter(
            (
                x in facts and y in facts and not names.compatible(facts[x][0], facts[y][0])
                for x, y in zip(np.asarray(ea).tolist(), np.asarray(eb).tolist(), strict=True)
            ),
            dtype=bool,
            count=len(ea),
        ) & ~np.isinf(weight)
    order = np.lexsort((tiebreak[eb], tiebreak[ea], -weight, late))
    ea, eb = ea[order].tolist(), eb[order].tolist()
    strong = (weight[order] >= strong_weight).tolist()
    linking = (weight[order] >= link_weight).tolist()
    record = graph.types == graph.type_names.index("record") if "record" in graph.type_names else None
    forced = np.isinf(weight[order]).tolist()
    partners = partners or {}
    flagged: dict[int, list[int]] = defaultdict(list)  # cluster -> its rows that have cannot-links
    for r in partners:
        flagged[int(label[r])].append(r)
    ntypes = len(graph.type_names)
    limits = [(graph.type_names.index(k), v) for k, v in rules.limits.items() if k in graph.type_names]
    # Rows of each touched cluster, sorted by label: type counts and matchable counts in one pass each,
    # matchable members listed only when the chaining share needs them (both sides have several).
    la, lb = label[np.asarray(ea)], label[np.asarray(eb)]
    touched = np.unique(np.concatenate([la, lb]))
    in_touched = np.flatnonzero(np.isin(label, touched))
    by_label = in_touched[np.argsort(label[in_touched], kind="stable")]
    sorted_labels = label[by_label]
    starts = np.searchsorted(sorted_labels, touched)
    ends = np.searchsorted(sorted_labels, touched, side="right")
    cluster_of = np.searchsorted(touched, sorted_labels)
    roots = touched.tolist()
    span = dict(zip(roots, zip(starts.tolist(), ends.tolist(), strict=True), strict=True))
    flat = np.bincount(cluster_of * ntypes + graph.types[by_label], minlength=len(touched) * ntypes)
    type_counts = dict(zip(roots, flat.reshape(-1, ntypes).tolist(), strict=True))
    matchable_count = dict(
        zip(roots, np.bincount(cluster_of[matchable[by_label]], minlength=len(touched)).tolist(), strict=True)
    )
    parts: dict[int, list[int]] = {}  # a joined cluster's original clusters (those not joined: themselves)

    members: dict[int, list[int]] = {}  # by cluster root, filled on first use and joined on merges

    def matchable_members(root: int) -> list[int]:
        out = members.get(root)
        if out is None:
            out = members[root] = []
            for part in parts.get(root, (root,)):
                lo, hi = span[part]
                rows = by_label[lo:hi]
                out += rows[matchable[rows]].tolist()
        return out

    cluster_facts: dict[int, list[Facts]] = {}  # by cluster root, filled on first use and joined on merges
    by_row: dict[int, Facts] = facts or {}

    def facts_of(root: int) -> list[Facts]:
        found = cluster_facts.get(root)
        if found is None:
            found = cluster_facts[root] = [f for r in matchable_members(root) if (f := by_row.get(r)) is not None]
        return found

    neighbours: dict[int, set[int]] = defaultdict(set)  # links: edges at or above the link weight
    corroborating: dict[int, set[int]] = defaultdict(set)  # every edge
    for x, y, link in zip(ea, eb, linking, strict=True):
        corroborating[x].add(y)
        corroborating[y].add(x)
        if link:
            neighbours[x].add(y)
            neighbours[y].add(x)

    def support(ra: int, rb: int, among: dict[int, set[int]]) -> int:
        right_set = set(matchable_members(rb))
        return sum(len(among[m] & right_set) for m in matchable_members(ra))

    # Must-linked records share their links in the chaining guard's count (not their corroborating pairs: a
    # labelled group would otherwise pull in every record that weakly resembles any one of its members).
    _share_must_neighbours(neighbours, [(x, y) for x, y, f in zip(ea, eb, forced, strict=True) if f])

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while (up := parent.get(root)) is not None:
            root = up
        while (up := parent.get(x)) is not None and up != root:
            parent[x], x = root, up
        return root

    for x, y, sure, link, must, lx, ly in zip(ea, eb, strong, linking, forced, la.tolist(), lb.tolist(), strict=True):
        ra, rb = find(lx), find(ly)
        if ra == rb:
            continue
        na, nb = matchable_count[ra], matchable_count[rb]
        if not link and (
            record is None
            or not (record[x] and record[y])
            or na + nb < 3
            or support(ra, rb, corroborating) < corroboration_needed(na, nb, chaining_density)
        ):
            continue
        if flagged and _kept_apart(flagged.get(ra, ()), rb, partners, lambda r: find(int(label[r]))):
            refused.append(Refusal("cannot_link", CANNOT_LINK_MESSAGE, int(graph.ids[x]), int(graph.ids[y])))
            continue
        if facts and not must:
            why = apart(facts_of(ra), facts_of(rb))
            if why is not None:
                refused.append(Refusal(why.rule, why.message, int(graph.ids[x]), int(graph.ids[y])))
                continue
        ca, cb = type_counts[ra], type_counts[rb]
        if must:
            pass  # a person said so: merge protection and the chaining guard do not apply
        elif limits and any(ca[k] + cb[k] > limit for k, limit in limits):
            names_ = graph.type_names
            decision = rules.check(
                Counter(dict(zip(names_, ca, strict=True))), Counter(dict(zip(names_, cb, strict=True))), {}, {},
                attributes=False,
            )  # fmt: skip
            if not decision.ok:
                refused.append(Refusal(decision.rule, decision.message, int(graph.ids[x]), int(graph.ids[y])))
                continue
        if link and na > 1 and nb > 1 and not sure:
            matching_pairs = support(ra, rb, neighbours)
            if matching_pairs < chain_support_needed(na, nb, chaining_density):
                refused.append(
                    Refusal(
                        "chaining",
                        f"only {matching_pairs} of {na * nb} record pairs between the two clusters match",
                        int(graph.ids[x]),
                        int(graph.ids[y]),
                    )
                )
                continue
        keep, gone = min(ra, rb), max(ra, rb)
        parent[gone] = keep
        type_counts[keep] = [i + j for i, j in zip(ca, cb, strict=True)]
        matchable_count[keep] = na + nb
        parts[keep] = parts.pop(ra, [ra]) + parts.pop(rb, [rb])
        _join_cached(cluster_facts, ra, rb, keep)
        _join_cached(members, ra, rb, keep)
        if flagged:
            joined = flagged.pop(ra, []) + flagged.pop(rb, [])
            if joined:
                flagged[keep] = joined
    if parent:
        keys = np.fromiter(parent, dtype=np.int64, count=len(parent))
        remap = np.arange(len(label), dtype=np.int64)
        remap[keys] = [find(int(k)) for k in keys.tolist()]
        label = remap[label]
    return label


T = TypeVar("T")


def _join_cached(cache: dict[int, list[T]], ra: int, rb: int, keep: int) -> None:
    """Two clusters joined as ``keep``: its cached list is theirs together (if both were cached)."""
    if ra in cache and rb in cache:
        cache[keep] = cache.pop(ra) + cache.pop(rb)
    else:
        cache.pop(ra, None)
        cache.pop(rb, None)


Facts = tuple[str | None, str | None, str | None, str | None]
"""A match row's cleaned first name, birthday, phone and email user (the veto's inputs)."""
BIRTHDAYS_MESSAGE = "the two clusters' records give two different birthdays: namesakes"
HOUSEHOLD_MESSAGE = (
    "a record on each side has another first name and another birthday, phone or email: two people sharing"
    " an address, a landline or a family email"
)


def two_people(a: Facts, b: Facts) -> bool:
    """Two match rows that are two people: their phones or their email users both known and clearly
    different (not a digit or a letter or two mistyped), and their first names unrelated. The model's veto
    (``first_name_conflict`` in `cdp.identity.matching.spec`) asks this of the pair it scores; here it is
    asked of every record on each side of a join. Birthdays do not count here: a register's duplicate
    whose first name and birthday were both replaced still joins through its other records."""
    differ = a[2] is not None and b[2] is not None and not names.one_edit_apart(a[2], b[2])
    if not differ and a[3] is not None and b[3] is not None:
        # two users, not one with typos in it (one in a short user, two in a longer one)
        differ = names.edits(a[3], b[3]) > (1 if min(len(a[3]), len(b[3])) < 6 else 2)
    return differ and a[0] is not None and b[0] is not None and not names.compatible(a[0], b[0])


def same_birthday(a: str, b: str) -> bool:
    """One person's birthday written twice, or their birth year worked out from an age (a census, a register):
    compatible (`compatible_birthdays`), or the same day and month one or two years apart."""
    if compatible_birthdays(a, b):
        return True
    return (
        len(a) == len(b) == 10
        and a[4:] == b[4:]
        and a[:4].isdigit()
        and b[:4].isdigit()
        and (abs(int(a[:4]) - int(b[:4])) <= 2)
    )


def usual_birthday(rows: Sequence[Facts]) -> str | None:
    """The birthday most of these rows give (ties: the earliest), if two or more rows give one."""
    known = Counter(f[1] for f in rows if f[1] is not None)
    if sum(known.values()) < 2:
        return None
    return min(known.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def apart(left: Sequence[Facts], right: Sequence[Facts]) -> Refusal | None:
    """Why two clusters (the facts of their match rows) are two people, if they are: a record on each
    side that `two_people` tells apart (``household``), or, when each side has several records, usual
    birthdays that are not one person's (``birthdays``: namesakes with the same birthplace and trade in a
    register, each with many records alike)."""
    reachable = [f for f in left if f[0] is not None and (f[2] is not None or f[3] is not None)]
    if reachable:
        other = [f for f in right if f[0] is not None and (f[2] is not None or f[3] is not None)]
        if any(two_people(a, b) for b in other for a in reachable):
            return Refusal("household", HOUSEHOLD_MESSAGE, 0, 0)
    if len(left) >= 2 and len(right) >= 2:
        a, b = usual_birthday(left), usual_birthday(right)
        if a is not None and b is not None and not same_birthday(a, b):
            return Refusal("birthdays", f"{BIRTHDAYS_MESSAGE} ({a} and {b})", 0, 0)
    return None


def _share_must_neighbours(neighbours: dict[int, set[int]], must: list[tuple[int, int]]) -> None:
    """Records a person must-linked share their match edges in the chaining guard's count: one person's
    records, so an edge to any of them supports a join with all of them."""
    if not must:
        return
    group: dict[int, int] = {}

    def root(x: int) -> int:
        while group.get(x, x) != x:
            x = group[x]
        return x

    for x, y in must:
        rx, ry = root(x), root(y)
        if rx != ry:
            group[ry] = rx
    members: dict[int, list[int]] = defaultdict(list)
    for x in {r for pair in must for r in pair}:
        members[root(x)].append(x)
    for rows in members.values():
        shared = set().union(*(neighbours[r] for r in rows))
        for r in rows:
            neighbours[r] = shared


def corroboration_needed(na: int, nb: int, share: float = 0.5) -> int:
    """Pairs, links or corroborating, that must tie two clusters of ``na`` and ``nb`` matchable records for
    a corroborating pair (below the match threshold) to join them: two when one side is a lone record (it
    resembles two of the person's records), else what the chaining guard asks of a link
    (`chain_support_needed`)."""
    if min(na, nb) == 1:
        return 2
    return chain_support_needed(na, nb, share)


def chain_support_needed(na: int, nb: int, share: float = 0.5) -> int:
    """Record pairs that must match between two clusters of ``na`` and ``nb`` matchable records for an
    edge weaker than the strong threshold to join them: ``share`` of the smaller cluster's size, and at
    least two.

    A chain is two people joined through one or two borderline pairs: it has that support whatever the
    clusters' sizes. One person's records, however noisy, match each other many times over: each record
    of the smaller part typically matches at least one of the larger. Asking for a share of *all* pairs
    instead (as cdp did before) cut people with dozens of noisy records into pieces, since most pairs of
    such records score low. Small clusters still need ``share`` of all their pairs, up to `CHAIN_MIN_PAIRS`:
    at a million rows, namesakes form many clusters of three or four records that two borderline pairs would
    otherwise chain."""
    return max(2, math.ceil(share * min(na, nb)), min(math.ceil(share * na * nb), CHAIN_MIN_PAIRS))


CHAIN_MIN_PAIRS = 8
"""Up to this many matching pairs, the chaining guard asks for ``share`` of all pairs between two clusters."""


def changing(graph: Graph, label: np.ndarray) -> np.ndarray:
    """Rows whose profile or cluster is not one-to-one with the other (the only rows `plan` can move).

    A profile whose identifiers all landed in one cluster that holds nothing else keeps its id and
    every identifier: nothing to plan. The rows returned are closed: every identifier of a profile
    among them, and every identifier of a cluster among them, is among them.
    """
    pairs = pd.DataFrame({"p": graph.profiles, "r": label}).drop_duplicates()
    several = pairs["r"].duplicated(keep=False).to_numpy() | pairs["p"].duplicated(keep=False).to_numpy()
    return np.flatnonzero(np.isin(label, pairs["r"].to_numpy()[several]))


@dataclass
class Plan:
    moves: dict[int, str] = field(default_factory=dict)  # identifier id -> its new profile
    merges: list[tuple[str, str]] = field(default_factory=list)  # (survivor, merged away)
    splits: list[tuple[str, str]] = field(default_factory=list)  # (profile split, profile the part went to)
    new_profiles: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.moves or self.merges or self.splits or self.new_profiles)


def plan(
    nodes: list[Node],
    root_of: dict[int, int],
    age: dict[str, tuple[str, int]],
    new_id: Callable[[], str],
) -> Plan:
    """Map clusters onto profiles: unchanged keep their id, joins keep the oldest, leavers get new ids."""
    by_profile: dict[str, list[Node]] = defaultdict(list)
    by_root: dict[int, list[Node]] = defaultdict(list)
    for node in nodes:
        by_profile[node.profile_id].append(node)
        by_root[root_of[node.id]].append(node)

    home: dict[str, int] = {}
    for pid, members in by_profile.items():
        shares = Counter(root_of[n.id] for n in members)
        best = min(members, key=lambda n: (PRIORITY.get(n.type, 99), n.id))
        home[pid] = max(shares, key=lambda r: (shares[r], r == root_of[best.id], -r))

    result = Plan()
    for root in sorted(by_root):
        members = by_root[root]
        profiles = {n.profile_id for n in members}
        candidates = sorted((p for p in profiles if home[p] == root), key=lambda p: age.get(p, ("", 0)))
        if candidates:
            target = candidates[0]
            result.merges += [(target, other) for other in candidates[1:]]
        else:
            target = new_id()
            result.new_profiles.append(target)
        for pid in sorted(profiles - set(candidates)):
            result.splits.append((pid, target))
        for node in members:
            if node.profile_id != target:
                result.moves[node.id] = target
    return result


def summary(result: Plan, refused: list[Refusal]) -> dict[str, Any]:
    return {
        "moved_identifiers": len(result.moves),
        "merges": len(result.merges),
        "splits": len(result.splits),
        "new_profiles": len(result.new_profiles),
        "refused": dict(Counter(r.rule for r in refused)),
    }
