"""First-name relation (cdp.identity.names): which spellings may be one person's name, on the real lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from cdp.identity import matching, names
from cdp.identity.graph import Rules
from cdp.settings import Settings

SAME_PERSON = [
    ("bob", "robert"),  # published nickname list
    ("jon", "jonathan"),  # short form
    ("j", "james"),  # initial
    ("jonathon", "jonathan"),  # one typo, 4+ letters
    ("thoams", "tom"),  # nickname of a corrected transposition
    ("mollly", "mary"),  # nickname of a name with a letter typed twice
    ("nicoole", "nikki"),  # nickname of a corrected doubled letter
    ("semantha", "sam"),  # nickname of a corrected substitution
    ("rnald", "ron"),  # nickname of a corrected dropped letter
    ("eeelyn", "evelyyn"),  # two misspellings of one name
    ("tiler", "tyyler"),  # one typo once the doubled letter is not counted
    ("ay", "amy"),  # a short known name with a letter dropped
    ("gry", "gary"),
    ("aan", "ana"),  # two letters swapped
    ("all", "albert"),  # doubled letter of a nickname (al)
    ("liv", "olivia"),  # curated diminutive; also a short form without the first vowel
    ("izzy", "isabella"),
    ("matt", "mathieu"),  # cognate
]

DIFFERENT_PEOPLE = [
    ("scott", "tyler"),
    ("helen", "samuel"),
    ("gabriel", "cynthia"),
    ("tim", "tom"),  # both known, not related, one edit
    ("dan", "don"),
    ("kim", "jim"),
    ("evan", "evie"),
    ("harry", "harriet"),
    ("roy", "rose"),
    ("ian", "brian"),
    ("mei", "wei"),  # both outside the lists: not corrected
    ("yan", "dan"),  # a three-letter name outside the lists is not a typo of a known one by substitution
    ("jin", "jim"),
    ("dana", "daniel"),  # Dana's candidate corrections disagree (Dani, Dina, Dona ...): a name of its own
    ("barry", "barbara"),
    ("mario", "margaret"),
    ("wei", "wesley"),
    ("sally", "salvatore"),
    ("any", "andrew"),
]


@pytest.mark.parametrize(("a", "b"), SAME_PERSON)
def test_related_first_names_are_compatible_both_ways(a: str, b: str) -> None:
    assert names.compatible(a, b) and names.compatible(b, a)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_PEOPLE)
def test_different_first_names_stay_incompatible(a: str, b: str) -> None:
    assert not names.compatible(a, b) and not names.compatible(b, a)


def test_corrections_only_for_unknown_spellings_with_one_reading() -> None:
    assert names.corrections("thoams") == {"thomas"}
    assert names.corrections("nicoole") == {"nicole", "nichole"}  # variants of one name agree
    assert names.corrections("thomas") == frozenset()  # a known name is never corrected
    assert names.corrections("dana") == frozenset()  # Dani, Dina, Dona ... disagree
    assert names.corrections("julio") == frozenset()  # Julia: another final vowel is a variant, not a typo
    assert names.corrections("wei") == frozenset()  # too short for a substitution


def test_related_names_list_what_sql_searches() -> None:
    assert {"thomas", "tom"} <= names.related_names("thoams")
    assert "olivia" in names.related_names("liv")
    assert "nikki" in names.related_names("nicoole")
    assert "thoams" not in names.related_names("thoams")
    assert names.related_names("zyxw") == frozenset()


def test_merge_protection_uses_the_relation(tmp_path: Path) -> None:
    rules = Rules(Settings(db=tmp_path / "x.db"))
    one = Counter({"record": 1, "email": 1})
    ok = rules.check(one, one, {"first_name": {"nicoole"}}, {"first_name": {"nikki"}})
    refused = rules.check(one, one, {"first_name": {"tyler"}}, {"first_name": {"ethan"}})
    assert ok.ok and not refused.ok and refused.rule == "attribute:first_name"


def test_prepared_rows_carry_the_wider_relation_for_the_sql_levels() -> None:
    rows = pd.DataFrame(
        {"unique_id": ["1", "2", "3"], "first_name": ["Thoams", "Liv", "Zyxw"], "last_name": ["A", "B", "C"]}
    )
    out = matching.prepare(rows)
    listed = out["first_name_nicknames"].tolist()
    assert "|tom|" in listed[0] and "|thomas|" in listed[0]
    assert "|olivia|" in listed[1]
    assert pd.isna(listed[2])
