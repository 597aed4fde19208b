"""What models write about a profile: the ``profiles.scores`` column (migration 0005).

Propensity scores (``propensity_<key>``) and personas (``persona``, ``persona_confidence``) live apart from
``computed``, which trait refreshes rewrite, and read as computed traits everywhere: the profile API, exports
(``merge_scores``), and rule segments (the segment session merges the columns in SQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def score_trait(key: str) -> str:
    """The computed trait a propensity segment writes."""
    return f"propensity_{key}"


def score_path(key: str) -> str:
    """``score_trait`` as an SQLite JSON path (segment keys match ``[a-z0-9_][a-z0-9_.-]*``: safe to inline)."""
    return f'$."{score_trait(key)}"'


def merge_scores(computed: Mapping[str, Any], scores_json: str | None) -> dict[str, Any]:
    """A profile's computed traits with what models wrote about it."""
    out = dict(computed)
    if scores_json and scores_json != "{}":
        out.update(orjson.loads(scores_json))
    return out
