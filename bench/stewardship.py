"""The simulated steward: pairwise F1 after answering the first N review items from the truth.

    PYTHONPATH=. .venv/bin/python bench/stewardship.py                      # typos corpus, 5,000 records
    PYTHONPATH=. .venv/bin/python bench/stewardship.py --corpus households --records 2000
    PYTHONPATH=. .venv/bin/python bench/stewardship.py --steps 0,20,50,100,200 --json-only

For each corpus it imports the generated records into a fresh store, runs `cdp resolve`, then for each N
answers review items (most informative first) from the ground truth until N are decided, runs
`cdp resolve` again and scores the profiles against the truth (pairwise precision, recall, F1). It also
times each decision (a ``match`` merges two profiles at once, then traits and segments are refreshed)
and the runs, and prints the labels' quality estimate (`GET /v1/identity/quality`) at the end.
Last line: one JSON object with every number.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from cdp import CDP
from cdp.demo import corpora
from cdp.identity.evaluate import score
from cdp.settings import Settings


def curve(corpus: str, records: int, steps: list[int], seed: int) -> dict[str, Any]:
    spec = corpora.CORPORA[corpus]
    rows, truth = corpora.generate(corpus, records, seed)
    entity = {
        (str(s), str(e)): str(t) for s, e, t in truth[["source", "external_id", "entity"]].itertuples(index=False)
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.csv"
        rows.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)
        with CDP(Settings(db=Path(tmp) / "cdp.db", scheduler_enabled=False)) as cdp:
            cdp.ingest.import_file(path, source=spec.source, id_column=spec.id_column, mapping=dict(spec.mapping))
            started = time.perf_counter()
            first = cdp.identity.run()
            first_run = time.perf_counter() - started

            def f1() -> dict[str, float]:
                clusters = {
                    (s, e): p
                    for s, e, p in cdp.store.reader().execute(
                        "SELECT r.source, r.external_id, coalesce(p.merged_into, r.profile_id) FROM source_records r"
                        " JOIN profiles p ON p.id = r.profile_id"
                    )
                }
                result: dict[str, float] = score(clusters, entity)["pairwise"]
                return result

            points: list[dict[str, Any]] = []
            decided, decide_seconds, answers = 0, 0.0, {"match": 0, "no_match": 0}
            for n in steps:
                while decided < n:
                    page = cdp.review.page(limit=1).data
                    if not page:
                        break
                    item = page[0]
                    left = entity.get((item["left"]["source"], item["left"]["external_id"]))
                    same = left is not None and left == entity.get(
                        (item["right"]["source"], item["right"]["external_id"])
                    )
                    t0 = time.perf_counter()
                    cdp.review.decide(item["id"], "match" if same else "no_match", key_id="bench")
                    decide_seconds += time.perf_counter() - t0
                    answers["match" if same else "no_match"] += 1
                    decided += 1
                t0 = time.perf_counter()
                if n:
                    cdp.identity.run()
                points.append({"n": n, "decided": decided, **f1(), "run_seconds": round(time.perf_counter() - t0, 2)})
            quality = cdp.identity_quality()
            model = cdp.identity.describe_model()
    return {
        "corpus": corpus,
        "records": len(rows),
        "model": {"kind": model["kind"], "threshold": model["threshold"]},
        "first_run_seconds": round(first_run, 2),
        "review_items_after_first_run": first["review_items"],
        "answers": answers,
        "decision_ms": round(1000 * decide_seconds / max(decided, 1), 1),
        "curve": points,
        "quality": {
            k: quality[k]
            for k in (
                "labelled_pairs",
                "scored_pairs",
                "agreement",
                "estimated_precision",
                "estimated_recall",
                "confusion",
            )
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="typos", choices=sorted(corpora.CORPORA))
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--steps", default="0,20,50,100", help="N values, comma-separated, ascending")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",")})
    result = curve(args.corpus, args.records, steps, args.seed)
    if not args.json_only:
        print(f"{result['corpus']}: {result['records']} records, {result['model']['kind']} model, threshold "
              f"{result['model']['threshold']}; {result['review_items_after_first_run']} review items after the first "
              f"run ({result['first_run_seconds']}s); {result['decision_ms']} ms a decision")  # fmt: skip
        print("     N   precision   recall      F1   run s")
        for p in result["curve"]:
            print(
                f"{p['n']:6d}   {p['precision']:9.4f}   {p['recall']:6.4f}   {p['f1']:6.4f}   {p['run_seconds']:5.1f}"
            )
        print(f"labels' estimate at the threshold: {result['quality']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
