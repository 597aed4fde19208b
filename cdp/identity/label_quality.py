"""How good the current match threshold is, measured on the human labels (``GET /v1/identity/quality``).

Each labelled pair of match rows (CRM records, identified users) is scored with the current model
(`cdp.identity.matching.explain_pair`); the model says "match" when the probability reaches the model's
threshold. Agreement, precision and recall are counted over those pairs. Labels are not a random sample:
most come from the review queue, which holds the pairs closest to the threshold, so these figures are
a pessimistic estimate of precision and recall over all pairs (the hardest pairs are over-represented).
"""

from __future__ import annotations

from typing import Any

from cdp import record_ids
from cdp.identity import matching
from cdp.identity.resolve import Resolution

MAX_SCORED = 2000
"""At most this many labels are scored (the newest)."""
MAX_EXPLAINED = 300
"""At most this many of them without a stored score are scored one by one."""


def estimate(resolution: Resolution) -> dict[str, Any]:
    conn = resolution.store.reader()
    rows = conn.execute(
        "SELECT node_l, node_r, decision FROM identity_labels ORDER BY id DESC LIMIT ?", (MAX_SCORED,)
    ).fetchall()
    counts = dict(conn.execute("SELECT decision, count(*) FROM identity_labels GROUP BY decision").fetchall())
    review = dict(conn.execute("SELECT status, count(*) FROM review_items GROUP BY status").fetchall())
    out: dict[str, Any] = {
        "labelled_pairs": sum(counts.values()),
        "labels": {"match": counts.get("match", 0), "no_match": counts.get("no_match", 0)},
        "review_queue": {k: review.get(k, 0) for k in ("open", "skipped", "decided")},
        "model_version": None,
        "threshold": None,
        "scored_pairs": 0,
        "agreement": None,
        "confusion": None,
        "estimated_precision": None,
        "estimated_recall": None,
        "note": (
            "scored on labelled pairs of records or identified users; labels come mostly from the review queue "
            "(pairs near the threshold), so these are pessimistic estimates"
        ),
    }
    latest = resolution.latest_model()
    if latest is None:
        return out
    version, model = latest
    out["model_version"], out["threshold"] = version, model.threshold
    usable = [(a, b, d) for a, b, d in rows if a.split(":", 1)[0] in ("record", "user_id") and b.split(":", 1)[0]
              in ("record", "user_id")]  # fmt: skip
    wanted = {k for a, b, _ in usable for k in (a, b)}
    records = [r for r in map(record_ids.parse_key, wanted) if r is not None]
    users = [k.split(":", 1)[1] for k in wanted if k.startswith("user_id:")]
    found = resolution.match_rows(records=records, users=users) if wanted else None
    by_id = {} if found is None else {str(r["unique_id"]): r for r in found.to_dict("records")}
    # Scores the model already gave these pairs (review items, match edges of this model version) are reused;
    # the others are scored one by one (at most MAX_EXPLAINED).
    known: dict[tuple[str, str], float] = {}
    for table in ("review_items", "match_edges"):
        for left, right, p in conn.execute(
            f"SELECT node_l, node_r, match_probability FROM {table} WHERE model_version = ?"
            " AND match_probability IS NOT NULL",
            (version,),
        ):
            known.setdefault((min(left, right), max(left, right)), float(p))
    explained = 0
    tp = fp = fn = tn = 0
    for a, b, decision in usable:
        p = known.get((min(a, b), max(a, b)))
        if p is None:
            if a not in by_id or b not in by_id or explained >= MAX_EXPLAINED:
                continue
            p = matching.explain_pair(model, by_id[a], by_id[b])["match_probability"]
            explained += 1
        said = p >= model.threshold
        truth = decision == "match"
        tp += said and truth
        fp += said and not truth
        fn += truth and not said
        tn += not said and not truth
    scored = tp + fp + fn + tn
    out["scored_pairs"] = scored
    if scored:
        out["agreement"] = round((tp + tn) / scored, 4)
        out["confusion"] = {"true_positive": tp, "false_positive": fp, "false_negative": fn, "true_negative": tn}
        out["estimated_precision"] = round(tp / (tp + fp), 4) if tp + fp else None
        out["estimated_recall"] = round(tp / (tp + fn), 4) if tp + fn else None
    return out
