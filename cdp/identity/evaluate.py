"""Scoring the current profiles against ground truth: pairwise precision/recall/F1, ARI, B-cubed."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable
from math import comb
from pathlib import Path
from typing import Any

from cdp.errors import InvalidInput


def read_truth(path: Path) -> dict[tuple[str, str], str]:
    """``source,external_id,entity`` rows as {(source, external_id): entity}."""
    if not path.is_file():
        raise InvalidInput(f"no such truth file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"source", "external_id", "entity"} - set(reader.fieldnames or ())
        if missing:
            raise InvalidInput(f"{path.name} needs the columns source, external_id, entity (missing {sorted(missing)})")
        return {(row["source"], row["external_id"]): row["entity"] for row in reader}


def score(predicted: dict[tuple[str, str], str], truth: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Compare two clusterings of the same records (only records in both are scored)."""
    keys = [k for k in truth if k in predicted]
    pairs = Counter((predicted[k], truth[k]) for k in keys)
    clusters = Counter(predicted[k] for k in keys)
    entities = Counter(truth[k] for k in keys)
    tp = sum(comb(n, 2) for n in pairs.values())
    predicted_pairs = sum(comb(n, 2) for n in clusters.values())
    true_pairs = sum(comb(n, 2) for n in entities.values())
    precision = tp / predicted_pairs if predicted_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(keys)
    total = comb(n, 2)
    expected = predicted_pairs * true_pairs / total if total else 0.0
    maximum = (predicted_pairs + true_pairs) / 2
    ari = (tp - expected) / (maximum - expected) if maximum != expected else 1.0
    b3_p = sum(pairs[(predicted[k], truth[k])] / clusters[predicted[k]] for k in keys) / n if n else 1.0
    b3_r = sum(pairs[(predicted[k], truth[k])] / entities[truth[k]] for k in keys) / n if n else 1.0
    return {
        "records": n,
        "records_missing": len(truth) - n,
        "true_pairs": true_pairs,
        "predicted_pairs": predicted_pairs,
        "true_positive_pairs": tp,
        "pairwise": {"precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5)},
        "clusters": {"predicted": len(clusters), "true": len(entities)},
        "adjusted_rand": round(ari, 5),
        "b_cubed": {
            "precision": round(b3_p, 5),
            "recall": round(b3_r, 5),
            "f1": round(2 * b3_p * b3_r / (b3_p + b3_r), 5) if b3_p + b3_r else 0.0,
        },
    }


def clusters_of(rows: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    return {(source, ext): pid for source, ext, pid in rows}


def group(mapping: dict[tuple[str, str], str]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, cluster in mapping.items():
        out[cluster].append(key)
    return out
