"""Clusters from identity evidence, and the stable mapping of clusters onto existing profile ids.

Pure logic, no database. ``cluster`` replays the deterministic links in the order they were seen
under the same merge protection as the real-time graph, then adds probabilistic edges strongest
first, refusing a join of two multi-record clusters that only a few weak edges support (so one
borderline pair cannot chain two people together). ``plan`` maps the clusters onto the current
profiles so an unchanged cluster keeps its id, joined clusters keep the oldest id, and a part that
leaves a profile gets a new id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdp.identity.graph import PRIORITY, Rules

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


@dataclass(frozen=True, slots=True)
class Link:
    a: int
    b: int
    alias: bool = False


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


def cluster(
    nodes: list[Node],
    links: Iterable[Link],
    edges: Iterable[Edge],
    rules: Rules,
    *,
    chaining_density: float = 0.5,
) -> tuple[dict[int, int], list[Refusal]]:
    """Node id -> cluster root, and the links/edges merge protection refused."""
    by_id = {n.id: n for n in nodes}
    comps = Components(by_id)
    refused: list[Refusal] = []
    for link in links:
        if link.a not in by_id or link.b not in by_id or by_id[link.a].shared or by_id[link.b].shared:
            continue
        ra, rb = comps.find(link.a), comps.find(link.b)
        if ra == rb:
            continue
        decision = rules.check(comps.counts(ra), comps.counts(rb), comps.attrs(ra), comps.attrs(rb), alias=link.alias)
        if decision.ok:
            comps.union(ra, rb)
        else:
            refused.append(Refusal(decision.rule, decision.message, link.a, link.b))

    strong = sorted((e for e in edges if e.a in by_id and e.b in by_id), key=lambda e: (-e.weight, e.a, e.b))
    neighbours: dict[int, set[int]] = defaultdict(set)
    for edge in strong:
        neighbours[edge.a].add(edge.b)
        neighbours[edge.b].add(edge.a)
    matchable = {n.id for n in nodes if n.type in MATCHABLE}
    for edge in strong:
        ra, rb = comps.find(edge.a), comps.find(edge.b)
        if ra == rb:
            continue
        decision = rules.check(comps.counts(ra), comps.counts(rb), comps.attrs(ra), comps.attrs(rb), attributes=False)
        if not decision.ok:
            refused.append(Refusal(decision.rule, decision.message, edge.a, edge.b))
            continue
        left = [m for m in comps.members(ra) if m in matchable]
        right = [m for m in comps.members(rb) if m in matchable]
        if len(left) > 1 and len(right) > 1:
            right_set = set(right)
            support = sum(len(neighbours[m] & right_set) for m in left)
            if support < chaining_density * len(left) * len(right):
                refused.append(
                    Refusal(
                        "chaining",
                        f"only {support} of {len(left) * len(right)} record pairs between the two clusters match",
                        edge.a,
                        edge.b,
                    )
                )
                continue
        comps.union(ra, rb)
    return {n.id: comps.find(n.id) for n in nodes}, refused


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
