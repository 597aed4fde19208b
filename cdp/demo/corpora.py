"""Hard person corpora: seeded generators whose error models are unlike `cdp.demo.generator`'s.

Each corpus is a function ``(n_entities, seed) -> (records, truth)``: ``records`` a DataFrame of strings
(a missing value is ``""``), ``truth`` a DataFrame ``[source, external_id, entity]`` with one row per
record. No network and no files: the value lists are in `cdp.demo.corpora_noise` and nicknames come
from the `nicknames` package. `CORPORA` says, for each, how a user would import it::

    cdp import records FILE --source SOURCE --id-column ID --map COL=FIELD ...

- ``typos``: contact-form people (1-8 records, many singletons): keyboard typos, dates with one wrong
  digit, swapped day/month or a wrong year digit, e-mail local parts with a typo or another domain,
  nicknames and initials, 10-30% missing per field.
- ``historical``: census-like registers: ~10 records per person on average, very skewed (many with
  10-30, some up to 100), families sharing surname, postcode and birthplace, a full name sometimes
  only in ``full_name``, dates of birth mostly before 1850 (year errors, ~58% missing), OCR
  confusions, abbreviations (Wm., Thos.), occupation spellings ("ag lab").
- ``households``: CDP-shaped people in households of 1-5 sharing surname, address, landline and
  sometimes a family e-mail; twins; namesakes in the same town; moves; 1-5 records per person.
- `entity_sizes_corpus`: entities of exactly the given record counts, noise in every record.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cdp.demo import corpora_noise as nz
from cdp.demo.corpora_households import HOUSEHOLDS_COLUMNS, HOUSEHOLDS_RATES, households_corpus
from cdp.demo.corpora_noise import Generated, Rows, case, maybe


@dataclass(frozen=True)
class Corpus:
    name: str
    generate: Callable[[int, int], Generated]
    source: str
    id_column: str
    mapping: dict[str, str]
    records_per_entity: float
    """Measured mean records per entity (to size a run in records)."""
    rates: dict[str, float] = field(default_factory=dict)
    """The documented error and missing rates (per record, or per present value where it says so)."""

    def map_args(self) -> list[str]:
        """``--map COL=FIELD`` arguments for ``cdp import records``."""
        return [arg for column, target in self.mapping.items() for arg in ("--map", f"{column}={target}")]

    def entities_for(self, records: int) -> int:
        return max(1, round(records / self.records_per_entity))


# -- typos ------------------------------------------------------------------------------------------
TYPOS_SIZES = ((1, 0.32), (2, 0.14), (3, 0.11), (4, 0.1), (5, 0.09), (6, 0.08), (7, 0.08), (8, 0.08))
TYPOS_RATES = {
    "missing_first_name": 0.1, "missing_surname": 0.1, "missing_dob": 0.25, "missing_city": 0.2,
    "missing_email": 0.3, "first_name_typo": 0.12, "nickname": 0.1, "initial": 0.04, "surname_typo": 0.12,
    "dob_error": 0.2, "city_typo": 0.08, "email_typo": 0.18, "email_other_domain": 0.1,
}  # fmt: skip
"""Per record; ``dob_error``, ``*_typo`` and ``email_*`` are shares of the records that have the field."""


@dataclass
class _Contact:
    first: str
    last: str
    dob: str
    city: str
    local: str
    domain: str


def _contact(rng: random.Random) -> _Contact:
    first = nz.pick(rng, nz.MODERN_MALE if rng.random() < 0.5 else nz.MODERN_FEMALE, 0.8)
    last = nz.pick(rng, nz.MODERN_SURNAMES, 0.7)
    dob = nz.random_date(rng, 1935, 2005)
    pattern = rng.randrange(5)
    local = (
        f"{first}{last}",
        f"{first}.{last}",
        f"{first}{rng.randint(1, 999)}",
        f"{first[0]}{last}{dob[2:4]}",
        f"{last}.{first[0]}{rng.randint(1, 99)}",
    )[pattern]
    return _Contact(first, last, dob, nz.pick(rng, nz.MODERN_CITIES, 0.9), local, nz.pick(rng, nz.MAIL_DOMAINS))


def _typos_row(rng: random.Random, p: _Contact, rates: dict[str, float], force: bool = False) -> dict[str, str]:
    first = p.first
    roll = rng.random()
    if roll < rates["nickname"]:
        first = nz.nickname(rng, first)
    elif roll < rates["nickname"] + rates["initial"]:
        first = first[0] + ("." if rng.random() < 0.5 else "")
    elif roll < rates["nickname"] + rates["initial"] + rates["first_name_typo"]:
        first = nz.typo(rng, first)
    last = nz.typo(rng, p.last) if rng.random() < rates["surname_typo"] else p.last
    dob = nz.date_error(rng, p.dob) if rng.random() < rates["dob_error"] else p.dob
    city = nz.typo(rng, p.city) if rng.random() < rates["city_typo"] else p.city
    local, domain = p.local, p.domain
    if rng.random() < rates["email_typo"]:
        local = nz.typo(rng, local)
        if rng.random() < 0.25:
            local = nz.typo(rng, local)
    if rng.random() < rates["email_other_domain"]:
        domain = rng.choice([d for d in nz.MAIL_DOMAINS if d != domain])
    row = {
        "first_name": maybe(rng, rates["missing_first_name"], case(rng, first)),
        "surname": maybe(rng, rates["missing_surname"], case(rng, last)),
        "dob": maybe(rng, rates["missing_dob"], dob),
        "city": maybe(rng, rates["missing_city"], case(rng, city)),
        "email": maybe(rng, rates["missing_email"], f"{local}@{domain}".lower()),
    }
    if (
        force
        and row["first_name"].lower() == p.first
        and row["surname"].lower() == p.last
        and row["dob"] in ("", p.dob)
    ):
        # noise in every record: a typo in the surname, or a date error when there is no surname
        if row["surname"]:
            row["surname"] = case(rng, nz.typo(rng, p.last))
        else:
            row["dob"] = nz.date_error(rng, p.dob)
    return row


TYPOS_COLUMNS = ["first_name", "surname", "dob", "city", "email"]


def typos_corpus(n_entities: int, seed: int) -> Generated:
    """Contact-form people, 1-8 records each (a third singletons): typos everywhere, see `TYPOS_RATES`."""
    rng = random.Random(f"typos:{seed}")
    out = Rows("contact_form", "record_id", TYPOS_COLUMNS)
    for index in range(n_entities):
        person = _contact(rng)
        for _ in range(nz.skewed_size(rng, TYPOS_SIZES)):
            out.add(f"t{index}", _typos_row(rng, person, TYPOS_RATES))
    return out.frames(rng)


def entity_sizes_corpus(sizes: list[int], seed: int) -> Generated:
    """One entity per size with exactly that many records, each record with at least one error (a name or
    date error on top of `TYPOS_RATES`); the typos corpus's columns and mapping."""
    rng = random.Random(f"sizes:{seed}")
    out = Rows("contact_form", "record_id", TYPOS_COLUMNS)
    for index, size in enumerate(sizes):
        person = _contact(rng)
        for _ in range(size):
            out.add(f"s{index}", _typos_row(rng, person, TYPOS_RATES, force=True))
    return out.frames(rng)


# -- historical -------------------------------------------------------------------------------------
HISTORICAL_RATES = {
    "full_name_only": 0.25, "missing_dob": 0.58, "dob_year_error": 0.2, "dob_day_error": 0.06,
    "missing_postcode": 0.55, "postcode_typo": 0.05, "missing_birth_place": 0.2, "birth_place_variant": 0.2,
    "birth_place_typo": 0.06, "missing_occupation": 0.3, "other_occupation": 0.1, "abbreviation": 0.1,
    "initial": 0.04, "nickname": 0.03, "first_name_ocr": 0.08, "first_name_typo": 0.05, "surname_ocr": 0.07,
    "surname_typo": 0.04, "surname_variant": 0.06, "names_swapped": 0.02, "missing_sex": 0.1, "moved": 0.12,
}  # fmt: skip
"""``dob_*`` errors are shares of the dates present; name errors of the names written."""


@dataclass
class _Resident:
    sex: str
    first: str
    last: str
    dob: str
    postcode: str
    birth_place: str
    occupation: str
    later_postcode: str


def _historical_size(rng: random.Random) -> int:
    """Log-normal, median 6, mean ~10; about 30% above 10, 5% above 30, at most 100."""
    return max(1, min(100, round(math.exp(rng.gauss(math.log(6.0), 1.0)))))


def _postcodes(rng: random.Random) -> dict[str, list[str]]:
    """A handful of postcodes per town, shared by everyone living in each."""
    out = {}
    for town, area in nz.OLD_TOWNS:
        out[town] = [
            f"{area}{rng.randint(1, 30)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
            f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
            for _ in range(4)
        ]
    return out


def _family(rng: random.Random, postcodes: dict[str, list[str]], members: int) -> list[_Resident]:
    """Members sharing surname, postcode and (mostly) birthplace: the people a register mixes up."""
    town = nz.pick(rng, [t for t, _ in nz.OLD_TOWNS], 0.8)
    last = nz.pick(rng, nz.OLD_SURNAMES, 1.0)
    postcode = rng.choice(postcodes[town])
    home = town if town in nz.BIRTH_PLACES else nz.pick(rng, nz.BIRTH_PLACES)
    base_year = rng.randint(1775, 1835)
    out: list[_Resident] = []
    for k in range(members):
        sex = "M" if rng.random() < 0.5 else "F"
        names = [n for n in (nz.OLD_MALE if sex == "M" else nz.OLD_FEMALE) if n not in {r.first for r in out}]
        first = nz.pick(rng, names, 1.1)
        year = base_year + (0 if k < 2 else rng.randint(20, 40)) + rng.randint(-4, 4)
        jobs = list(nz.OCCUPATIONS)
        occupation = (
            rng.choice([*jobs[:5], "blacksmith", "carpenter", "farmer", "shoemaker", "tailor", "railway porter"])
            if sex == "M"
            else rng.choice(["domestic servant", "dressmaker", "laundress", "wife", "scholar", "cotton weaver"])
        )
        moved = rng.random() < HISTORICAL_RATES["moved"]
        out.append(
            _Resident(
                sex=sex,
                first=first,
                last=last,
                dob=nz.random_date(rng, year, year),
                postcode=postcode,
                birth_place=home if k >= 2 or rng.random() < 0.5 else nz.pick(rng, nz.BIRTH_PLACES),
                occupation=occupation,
                later_postcode=rng.choice(postcodes[nz.pick(rng, [t for t, _ in nz.OLD_TOWNS])]) if moved else postcode,
            )
        )
    return out


def _old_first(rng: random.Random, name: str, rates: dict[str, float]) -> str:
    roll = rng.random()
    abbreviations = nz.OLD_ABBREVIATIONS.get(name)
    if abbreviations and roll < rates["abbreviation"]:
        return rng.choice(abbreviations)
    roll -= rates["abbreviation"]
    if roll < rates["initial"]:
        return name[0] + ("." if rng.random() < 0.5 else "")
    roll -= rates["initial"]
    if roll < rates["nickname"]:
        return nz.nickname(rng, name)
    roll -= rates["nickname"]
    if roll < rates["first_name_ocr"]:
        return nz.ocr(rng, name)
    roll -= rates["first_name_ocr"]
    return nz.typo(rng, name) if roll < rates["first_name_typo"] else name


def _old_last(rng: random.Random, name: str, rates: dict[str, float]) -> str:
    roll = rng.random()
    if name in nz.SURNAME_VARIANTS and roll < rates["surname_variant"]:
        return rng.choice(nz.SURNAME_VARIANTS[name])
    roll -= rates["surname_variant"]
    if roll < rates["surname_ocr"]:
        return nz.ocr(rng, name)
    roll -= rates["surname_ocr"]
    return nz.typo(rng, name) if roll < rates["surname_typo"] else name


def _historical_row(rng: random.Random, p: _Resident, later: bool, rates: dict[str, float]) -> dict[str, str]:
    first, last = _old_first(rng, p.first, rates), _old_last(rng, p.last, rates)
    if rng.random() < rates["names_swapped"]:
        first, last = last, first
    first, last = case(rng, first), case(rng, last)
    row = {"first_name": first, "surname": last, "full_name": ""}
    if rng.random() < rates["full_name_only"]:
        style = rng.random()
        row["full_name"] = (
            f"{first} {last}" if style < 0.65 else f"{last}, {first}" if style < 0.9 else f"{last} {first}"
        )
        row["first_name"] = row["surname"] = ""
    dob = p.dob
    if rng.random() < rates["dob_year_error"]:  # ages misreported by a year, or a digit misread
        year = int(dob[:4]) + rng.choice((-1, 1)) if rng.random() < 0.6 else None
        dob = (nz.valid_date(year, int(dob[5:7]), int(dob[8:10])) or dob) if year else nz.date_error(rng, dob, "year")
    if rng.random() < rates["dob_day_error"]:
        dob = nz.date_error(rng, dob, rng.choice(("digit", "swap")))
    row["dob"] = maybe(rng, rates["missing_dob"], dob)
    postcode = p.later_postcode if later else p.postcode
    if rng.random() < rates["postcode_typo"]:
        postcode = nz.ocr(rng, postcode.lower()).upper()
    row["postcode"] = maybe(
        rng, rates["missing_postcode"], postcode if rng.random() < 0.8 else postcode.replace(" ", "")
    )
    place = p.birth_place
    if rng.random() < rates["birth_place_variant"]:
        place = rng.choice(nz.PLACE_VARIANTS.get(place, (place,)))
    if rng.random() < rates["birth_place_typo"]:
        place = nz.ocr(rng, place)
    row["birth_place"] = maybe(rng, rates["missing_birth_place"], case(rng, place))
    occupation = p.occupation
    if rng.random() < rates["other_occupation"]:
        occupation = rng.choice(list(nz.OCCUPATIONS))
    row["occupation"] = maybe(rng, rates["missing_occupation"], case(rng, rng.choice(nz.OCCUPATIONS[occupation])))
    row["sex"] = maybe(rng, rates["missing_sex"], p.sex)
    return row


HISTORICAL_COLUMNS = ["first_name", "surname", "full_name", "dob", "postcode", "birth_place", "occupation", "sex"]


def historical_corpus(n_entities: int, seed: int) -> Generated:
    """Census-like registers, ~10 records per person (skewed up to 100); see `HISTORICAL_RATES`."""
    rng = random.Random(f"historical:{seed}")
    postcodes = _postcodes(rng)
    out = Rows("census", "rec_id", HISTORICAL_COLUMNS)
    people: list[_Resident] = []
    while len(people) < n_entities:
        people.extend(_family(rng, postcodes, min(n_entities - len(people), nz.skewed_size(rng, _FAMILY_SIZES))))
    for index, person in enumerate(people):
        size = _historical_size(rng)
        for k in range(size):
            out.add(f"h{index}", _historical_row(rng, person, k >= size // 2, HISTORICAL_RATES))
    return out.frames(rng)


_FAMILY_SIZES = ((1, 0.25), (2, 0.25), (3, 0.2), (4, 0.15), (5, 0.1), (6, 0.05))


CORPORA: dict[str, Corpus] = {
    "typos": Corpus(
        "typos",
        typos_corpus,
        source="contact_form",
        id_column="record_id",
        mapping={
            "first_name": "first_name",
            "surname": "last_name",
            "dob": "birthday",
            "city": "address.city",
            "email": "email",
        },
        records_per_entity=3.45,
        rates=TYPOS_RATES,
    ),
    "historical": Corpus(
        "historical",
        historical_corpus,
        source="census",
        id_column="rec_id",
        mapping={
            "first_name": "first_name",
            "surname": "last_name",
            "full_name": "full_name",
            "dob": "birthday",
            "postcode": "address.postal_code",
            "birth_place": "birth_place",
            "occupation": "title",
            "sex": "gender",
        },
        records_per_entity=9.9,
        rates=HISTORICAL_RATES,
    ),
    "households": Corpus(
        "households",
        households_corpus,
        source="crm",
        id_column="id",
        mapping={
            "first_name": "first_name",
            "last_name": "last_name",
            "email": "email",
            "phone": "phone",
            "birthday": "birthday",
            "street": "address.street",
            "city": "address.city",
            "postal_code": "address.postal_code",
            "country": "address.country",
        },
        records_per_entity=2.23,
        rates=HOUSEHOLDS_RATES,
    ),
}


def generate(name: str, records: int, seed: int) -> Generated:
    """About ``records`` records of the named corpus."""
    corpus = CORPORA[name]
    return corpus.generate(corpus.entities_for(records), seed)


__all__ = [
    "CORPORA",
    "HISTORICAL_COLUMNS",
    "HOUSEHOLDS_COLUMNS",
    "TYPOS_COLUMNS",
    "Corpus",
    "entity_sizes_corpus",
    "generate",
    "historical_corpus",
    "households_corpus",
    "typos_corpus",
]


def describe(records: pd.DataFrame) -> dict[str, Any]:
    """Share of empty values per column (for a quick look at a generated corpus)."""
    return {c: round(float((records[c] == "").mean()), 3) for c in records.columns}
