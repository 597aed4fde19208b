"""A segment preview estimated from a random sample of profiles, for stores too large for an interactive
whole-store pass.

The exact preview is one DuckDB pass over every event and profile (seconds to tens of seconds on a million
profiles). This one draws ``n`` distinct profile rowids uniformly from ``1..max(rowid)`` (an index lookup
each; no table scan), evaluates the rule on the live profiles among them with the reference evaluator (the
same one real-time runs use, kept identical to the SQL by property tests) over their own rows, and scales:

    size ~= max(rowid) * members / n

Rowids that are gaps or merged-away profiles count as non-members, so the estimate needs no count of live
profiles. The 95 % interval is Wilson's score interval of ``members / n`` scaled the same way. The cost is
bounded by ``n`` (the profiles' events are read through the ``events_profile`` index), whatever the store's
size.
"""

from __future__ import annotations

import math
import random
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cdp.chunks import chunked, marks
from cdp.segments import rules

if TYPE_CHECKING:
    from cdp.segments.engine import Engine

Z95 = 1.959964


@dataclass(frozen=True)
class Estimate:
    members: set[str]
    drawn: int
    live: int
    span: int
    size: int
    low: int
    high: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampled_profiles": self.drawn,
            "sampled_live": self.live,
            "sampled_members": len(self.members),
            "profile_rowids": self.span,
            "size": self.size,
            "low": self.low,
            "high": self.high,
            "confidence": 0.95,
        }


def profile_span(conn: sqlite3.Connection) -> int:
    """The largest profile rowid (an upper bound on the number of profiles; one index step)."""
    return int(conn.execute("SELECT coalesce(max(rowid), 0) FROM profiles").fetchone()[0])


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95 % score interval of a proportion ``k / n``."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(
    conn: sqlite3.Connection,
    engine: Engine,
    rule: rules.Rule,
    now: datetime,
    n: int,
    *,
    seed: int | None = None,
) -> Estimate:
    """The rule's size estimated from ``n`` uniformly drawn profile rowids (all of them when there are fewer)."""
    span = profile_span(conn)
    drawn = min(n, span)
    rowids = random.Random(seed).sample(range(1, span + 1), drawn) if drawn else []
    live: list[str] = []
    for part in chunked(rowids):
        live += [
            str(r[0])
            for r in conn.execute(
                f"SELECT id FROM profiles WHERE rowid IN ({marks(part)}) AND merged_into IS NULL", part
            )
        ]
    members: set[str] = set()
    for ids in chunked(live):
        members |= engine.members_python(rule, ids, now)
    if drawn == span:  # every profile was evaluated: exact
        return Estimate(members, drawn, len(live), span, len(members), len(members), len(members))
    lo, hi = wilson(len(members), drawn)
    return Estimate(
        members,
        drawn,
        len(live),
        span,
        size=round(span * len(members) / drawn),
        low=math.floor(span * lo),
        high=math.ceil(span * hi),
    )
