"""The hard person corpora (`cdp.demo.corpora`): reproducible, fully labelled, errors as documented."""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import pandas as pd
import pytest

from cdp.demo.corpora import CORPORA, entity_sizes_corpus, generate
from cdp.demo.corpora_households import household_of
from cdp.demo.corpora_noise import date_error, nicknames_of, ocr, related_names, typo
from cdp.identity.evaluate import score

CANONICAL = {
    "first_name", "last_name", "email", "phone", "birthday", "address.street", "address.city",
    "address.postal_code", "address.country", "company", "title",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpora() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    return {name: corpus.generate(corpus.entities_for(3000), 11) for name, corpus in CORPORA.items()}


def _joined(records: pd.DataFrame, truth: pd.DataFrame, id_column: str) -> pd.DataFrame:
    return records.merge(truth, left_on=id_column, right_on="external_id", validate="one_to_one")


def _mode(values: pd.Series) -> str:
    present = [v for v in values if v]
    return Counter(present).most_common(1)[0][0] if present else ""


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_reproducible_with_a_seed(name: str) -> None:
    corpus = CORPORA[name]
    a_records, a_truth = corpus.generate(120, 5)
    b_records, b_truth = corpus.generate(120, 5)
    pd.testing.assert_frame_equal(a_records, b_records)
    pd.testing.assert_frame_equal(a_truth, b_truth)
    c_records, _ = corpus.generate(120, 6)
    assert not a_records.equals(c_records)


def test_truth_covers_every_record_and_mapping_is_importable(
    corpora: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
) -> None:
    for name, (records, truth) in corpora.items():
        corpus = CORPORA[name]
        assert list(truth.columns) == ["source", "external_id", "entity"]
        assert records[corpus.id_column].is_unique
        assert set(records[corpus.id_column]) == set(truth["external_id"])
        assert (truth["source"] == corpus.source).all()
        assert set(corpus.mapping) | {corpus.id_column} == set(records.columns)
        assert {t for t in corpus.mapping.values() if "." in t or t in CANONICAL} <= CANONICAL
        assert corpus.map_args()[:2] == ["--map", f"{next(iter(corpus.mapping))}={next(iter(corpus.mapping.values()))}"]
        # sized in records as documented (within 15%)
        assert abs(len(records) / 3000 - 1) < 0.15, (name, len(records))
        # ids say nothing about entities: one entity's records are not numbered together
        joined = _joined(records, truth, corpus.id_column)
        first_two = joined.groupby("entity")[corpus.id_column].apply(sorted).apply(lambda ids: ids[:2])
        adjacent = sum(1 for ids in first_two if len(ids) == 2 and int(ids[1][1:]) - int(ids[0][1:]) == 1)
        assert adjacent < 0.1 * len(first_two)
        # scoring the truth against itself is perfect (the shape `score` expects)
        keyed = {(s, e): ent for s, e, ent in truth.itertuples(index=False)}
        assert score(keyed, keyed)["pairwise"]["f1"] == 1.0


def test_typos_missing_and_error_rates(corpora: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> None:
    records, truth = corpora["typos"]
    rates = CORPORA["typos"].rates
    for column, rate in (("first_name", "missing_first_name"), ("surname", "missing_surname"), ("dob", "missing_dob"),
                         ("city", "missing_city"), ("email", "missing_email")):  # fmt: skip
        assert abs((records[column] == "").mean() - rates[rate]) < 0.04, column
    sizes = truth["entity"].value_counts()
    assert sizes.max() <= 8 and (sizes == 1).mean() > 0.25
    joined = _joined(records, truth, "record_id")
    big = joined[joined["entity"].isin(sizes[sizes >= 4].index)]
    dob_mode = big.groupby("entity")["dob"].transform(_mode)
    present = big[big["dob"] != ""]
    wrong = present[present["dob"] != dob_mode[present.index]]
    assert abs(len(wrong) / len(present) - rates["dob_error"]) < 0.06
    # a wrong date is one typo away: one digit, or day and month swapped (the mode of a small entity's
    # dates can itself be a wrong one, hence "almost all")
    near = 0
    for value, mode in zip(wrong["dob"], dob_mode[wrong.index], strict=True):
        differing = sum(a != b for a, b in zip(value, mode, strict=True))
        swapped = value[:4] == mode[:4] and value[5:7] == mode[8:10] and value[8:10] == mode[5:7]
        near += differing == 1 or swapped or (value[:4] == mode[:4] and differing == 2)
    assert near / len(wrong) > 0.85
    first_mode = big.groupby("entity")["first_name"].transform(lambda s: _mode(s.str.lower()))
    names = big[big["first_name"] != ""]
    lowered = names["first_name"].str.lower()
    nick = [related_names(a, b) and a != b for a, b in zip(lowered, first_mode[names.index], strict=True)]
    initials = lowered.str.fullmatch(r"[a-z]\.?")
    assert 0.05 < sum(nick) / len(names) < 0.16
    assert 0.02 < initials.mean() < 0.07
    email_mode = big.groupby("entity")["email"].transform(_mode)
    mails = big[big["email"] != ""]
    other = mails["email"] != email_mode[mails.index]
    assert 0.15 < other.mean() < 0.4  # typos in the local part (18%) and another domain (10%)


def test_historical_shape(corpora: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> None:
    records, truth = corpora["historical"]
    rates = CORPORA["historical"].rates
    sizes = truth["entity"].value_counts()
    assert 8 <= sizes.mean() <= 12
    assert (sizes >= 10).mean() > 0.25 and (sizes > 30).sum() >= 3 and sizes.max() <= 100
    full_only = (records["full_name"] != "") & (records["first_name"] == "") & (records["surname"] == "")
    assert abs(full_only.mean() - rates["full_name_only"]) < 0.04
    assert ((records["full_name"] == "") | full_only).all()
    assert abs((records["dob"] == "").mean() - rates["missing_dob"]) < 0.04
    years = records.loc[records["dob"] != "", "dob"].str[:4].astype(int)
    assert (years < 1850).mean() > 0.75
    assert abs((records["postcode"] == "").mean() - rates["missing_postcode"]) < 0.04
    postcodes = records.loc[records["postcode"] != "", "postcode"]
    assert postcodes.str.fullmatch(r"[A-Z]{1,2}\d{1,2} ?\d[A-Z]{2}").mean() > 0.9
    # values shared by many unrelated people: common names, a town's postcode
    joined = _joined(records, truth, "rec_id")
    by_name = (
        joined[joined["first_name"] != ""]
        .groupby([joined["first_name"].str.lower(), joined["surname"].str.lower()])["entity"]
        .nunique()
    )
    assert by_name.max() >= 5
    assert joined[joined["postcode"] != ""].groupby("postcode")["entity"].nunique().max() >= 20
    # clerks' spellings: OCR confusions, abbreviations, occupation variants
    text = " ".join(records["first_name"].str.lower()) + " " + " ".join(records["surname"].str.lower())
    assert re.search(r"\b(wm|thos|jas|geo)\.?\b", text) and re.search(r"[a-z]1|1[a-z]", text)
    occupations = set(records["occupation"].str.lower())
    assert {"ag lab", "agricultural labourer"} <= occupations


def test_households_share_address_and_phone_with_distinct_first_names(
    corpora: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
) -> None:
    records, truth = corpora["households"]
    joined = _joined(records, truth, "id")
    joined["household"] = joined["entity"].map(household_of)
    joined["digits"] = joined["phone"].str.replace(r"\D", "", regex=True).str[-9:]
    joined["address"] = (
        joined["street"].str.lower().str.split(" ").str[0]
        + "|"
        + joined["postal_code"].str.upper().str.replace(" ", "")
    )
    people = joined.groupby("entity").agg(
        household=("household", "first"),
        first=("first_name", lambda s: _mode(s.str.lower())),
        last=("last_name", lambda s: _mode(s.str.lower())),
        birthday=("birthday", _mode),
        city=("city", lambda s: _mode(s.str.lower())),
    )
    families = people.groupby("household")
    multi = [h for h, members in families if len(members) >= 2]
    assert len(multi) > 200
    same_last = sum(people.loc[people["household"] == h, "last"].nunique() == 1 for h in multi)
    # each person's surname is their records' most common spelling; a typo (4% of records) in a one- or
    # two-record person's surname is enough to make it differ, so about 3% of people and 8% of households
    assert same_last / len(multi) > 0.88
    distinct_first = sum(people.loc[people["household"] == h, "first"].is_unique for h in multi)
    assert distinct_first / len(multi) > 0.97
    # a landline or a street address shared by two members of one household, and not across households
    shared_phone = shared_address = 0
    for h in multi:
        rows = joined[joined["household"] == h]
        phones = rows[rows["phone"] != ""].groupby("digits")["entity"].nunique()
        addresses = rows[(rows["street"] != "") & (rows["postal_code"] != "")].groupby("address")["entity"].nunique()
        shared_phone += bool((phones >= 2).any())
        shared_address += bool((addresses >= 2).any())
    assert shared_phone / len(multi) > 0.35 and shared_address / len(multi) > 0.6
    across = joined[joined["phone"] != ""].groupby("digits")["household"].nunique()
    assert (across > 1).mean() < 0.005
    # twins (one household, same birthday, different first names) and namesakes (another household in the
    # same town with the same first and last name, another birthday)
    twins = sum(
        1
        for _, members in families
        for a, b in combinations(members.itertuples(), 2)
        if a.birthday and a.birthday == b.birthday and a.first != b.first
    )
    assert twins >= 5
    namesakes = (
        people[people["first"] != ""]
        .groupby(["first", "last", "city"])
        .filter(lambda g: g["household"].nunique() > 1 and g["birthday"].nunique() > 1)
    )
    assert len(namesakes) >= 20
    for column, rate in (("birthday", "missing_birthday"), ("email", "missing_email"), ("country", "missing_country")):
        assert abs((records[column] == "").mean() - CORPORA["households"].rates[rate]) < 0.05, column


def test_entity_sizes_corpus_exact_sizes_and_noise_in_every_record() -> None:
    sizes = [2, 10, 30, 100]
    records, truth = entity_sizes_corpus(sizes, 3)
    assert sorted(truth["entity"].value_counts()) == sizes
    joined = _joined(records, truth, "record_id")
    for _, rows in joined.groupby("entity"):
        if len(rows) < 30:
            continue
        first, last, dob = (_mode(rows[c].str.lower()) for c in ("first_name", "surname", "dob"))
        clean = (
            (rows["first_name"].str.lower() == first)
            & (rows["surname"].str.lower() == last)
            & rows["dob"].isin(["", dob])
        )
        assert not clean.any(), rows[clean]
    a, _ = entity_sizes_corpus(sizes, 3)
    pd.testing.assert_frame_equal(a, records)
    assert generate("typos", 200, 1)[0].shape[1] == 6


def test_error_models() -> None:
    import random

    rng = random.Random(1)
    for _ in range(200):
        word = rng.choice(["robert", "elizabeth", "smith", "norwich"])
        wrong = typo(rng, word)
        assert wrong != word
        assert abs(len(wrong) - len(word)) <= 1
    assert {ocr(random.Random(k), "rnary") for k in range(30)} & {"mary"}
    for k in range(100):
        changed = date_error(random.Random(k), "1971-06-04")
        assert changed != "1971-06-04" and len(changed) == 10
    assert date_error(random.Random(0), "1971-06-04", "swap") == "1971-04-06"
    assert "bob" in nicknames_of("robert") and related_names("Bob", "Robert") and not related_names("Mary", "John")
