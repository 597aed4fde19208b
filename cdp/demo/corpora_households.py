"""The ``households`` corpus: CDP-shaped people whose families share what usually identifies a person.

Households of 1-5 share surname, street address and (mostly) a landline; some write a family e-mail.
Their members have different first names (never nicknames of each other) and birthdays, except twins
(same birthday, different first names). Namesakes (same first and last name in the same town, another
birthday and address) are planted on purpose. Each person has 1-5 records with typos, nicknames,
formatting variants of phones, streets and postcodes, moves to a new address and missing fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cdp.demo import corpora_noise as nz
from cdp.demo.corpora_noise import Generated, Rows, case, maybe

HOUSEHOLD_SIZES = ((1, 0.3), (2, 0.28), (3, 0.17), (4, 0.15), (5, 0.1))
PERSON_RECORDS = ((1, 0.4), (2, 0.25), (3, 0.15), (4, 0.12), (5, 0.08))
HOUSEHOLDS_RATES = {
    "landline": 0.8, "family_email": 0.3, "twins": 0.2, "namesake": 0.08, "moved": 0.12,
    "missing_email": 0.2, "missing_phone": 0.25, "missing_birthday": 0.35, "missing_street": 0.1,
    "missing_city": 0.1, "missing_postal_code": 0.15, "missing_country": 0.4, "first_name_typo": 0.06,
    "nickname": 0.08, "initial": 0.02, "last_name_typo": 0.04, "email_typo": 0.04, "birthday_error": 0.05,
    "street_typo": 0.04, "city_typo": 0.03,
}  # fmt: skip
"""``landline`` and ``family_email``: shares of households of two or more; ``twins``: of households
with two or more children; ``namesake``: of households; ``moved``: of people with two or more records;
the rest per record (errors: shares of the values present)."""

_US_CITIES = (
    ("new york", "100", "212"), ("los angeles", "900", "213"), ("chicago", "606", "312"),
    ("houston", "770", "713"), ("phoenix", "850", "602"), ("philadelphia", "191", "215"),
    ("san antonio", "782", "210"), ("san diego", "921", "619"), ("dallas", "752", "214"),
    ("austin", "787", "512"), ("columbus", "432", "614"), ("seattle", "981", "206"),
    ("denver", "802", "303"), ("boston", "021", "617"), ("portland", "972", "503"),
)  # fmt: skip
_GB_CITIES = (
    ("london", "SW", "20"), ("manchester", "M", "161"), ("birmingham", "B", "121"), ("leeds", "LS", "113"),
    ("glasgow", "G", "141"), ("sheffield", "S", "114"), ("bristol", "BS", "117"), ("liverpool", "L", "151"),
    ("leicester", "LE", "116"), ("edinburgh", "EH", "131"), ("cardiff", "CF", "29"), ("nottingham", "NG", "115"),
)  # fmt: skip
_STREETS = (
    "high", "church", "station", "park", "victoria", "green", "manor", "kings", "queens", "mill", "oak",
    "maple", "cedar", "elm", "washington", "lake", "hill", "main", "pine", "school", "north", "south",
)  # fmt: skip
_SUFFIXES = {"street": "st", "road": "rd", "avenue": "ave", "lane": "ln", "drive": "dr", "close": "cl"}
_COUNTRY_SPELLINGS = {"GB": ("GB", "UK", "United Kingdom", "England"), "US": ("US", "USA", "United States")}


@dataclass
class _Home:
    country: str
    city: str
    street: str
    postal_code: str
    landline: str


@dataclass
class _Member:
    first: str
    last: str
    birthday: str
    mobile: str
    email: str
    home: _Home
    later: _Home | None = None


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _home(rng: random.Random, country: str | None = None, city: str | None = None) -> _Home:
    country = country or ("GB" if rng.random() < 0.6 else "US")
    cities = _GB_CITIES if country == "GB" else _US_CITIES
    found = [c for c in cities if c[0] == city] or [cities[min(len(cities) - 1, int(rng.paretovariate(1.2)) - 1)]]
    name, code, area = found[0]
    street = f"{rng.randint(1, 250)} {rng.choice(_STREETS)} {rng.choice(list(_SUFFIXES))}"
    if country == "GB":
        postal = f"{code}{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        postal += rng.choice("ABDEFGHJLNPQRSTUWXYZ")
        landline = f"+44{area}{_digits(rng, 10 - len(area))}"
    else:
        postal = f"{code}{rng.randint(0, 99):02d}"
        landline = f"+1{area}{rng.randint(2, 9)}{_digits(rng, 6)}"
    return _Home(country, name, street, postal, landline)


def _mobile(rng: random.Random, country: str) -> str:
    return (
        f"+447{_digits(rng, 9)}"
        if country == "GB"
        else f"+1{rng.choice(('415', '646', '917', '310'))}{_digits(rng, 7)}"
    )


def _phone_text(rng: random.Random, number: str) -> str:
    """A number as people write it (always parseable with the default region US)."""
    roll = rng.random()
    if number.startswith("+1"):
        n = number[2:]
        return (f"+1 {n[:3]} {n[3:6]} {n[6:]}", f"({n[:3]}) {n[3:6]}-{n[6:]}", f"{n[:3]}-{n[3:6]}-{n[6:]}", n)[
            min(3, int(roll * 4))
        ]
    n = number[3:]
    return (f"+44 {n[:4]} {n[4:]}", number, f"0044 {n}", f"+44 (0){n}")[min(3, int(roll * 4))]


def _mailbox(address: str) -> str:
    """What makes two addresses one mailbox: the domain and the user's letters and digits (Gmail ignores
    dots; other providers differ, so the stricter reading is used)."""
    user, _, domain = address.lower().partition("@")
    return "".join(ch for ch in user if ch.isalnum()) + "@" + domain


def _unique(rng: random.Random, address: str, taken: set[str]) -> str:
    """An address nobody else in the corpus has: a mailbox belongs to one person (or one family)."""
    while _mailbox(address) in taken:
        user, _, domain = address.partition("@")
        address = f"{user}{rng.randint(1, 99)}@{domain}"
    taken.add(_mailbox(address))
    return address


def _email(rng: random.Random, first: str, last: str, birthday: str, taken: set[str]) -> str:
    local = rng.choice((f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}", f"{first}{birthday[2:4]}",
                        f"{first}_{last}{rng.randint(1, 99)}"))  # fmt: skip
    return _unique(rng, f"{local}@{nz.pick(rng, nz.MAIL_DOMAINS)}".lower(), taken)


def _household(rng: random.Random, people: list[_Member], taken: set[str]) -> list[_Member]:
    """One household; sometimes the first member is a namesake of someone already generated. ``taken``: the
    mailboxes already given out (namesakes and relatives never share a personal address by chance)."""
    size = nz.skewed_size(rng, HOUSEHOLD_SIZES)
    namesake = people[rng.randrange(len(people))] if people and rng.random() < HOUSEHOLDS_RATES["namesake"] else None
    home = _home(rng, namesake.home.country, namesake.home.city) if namesake else _home(rng)
    last = namesake.last if namesake else nz.pick(rng, nz.MODERN_SURNAMES, 0.7)
    landline = home.landline if size > 1 and rng.random() < HOUSEHOLDS_RATES["landline"] else ""
    home.landline = landline
    family = f"{rng.choice(('the', ''))}{last}{rng.choice(('s', 'family', 'house'))}@{nz.pick(rng, nz.MAIL_DOMAINS)}"
    family_email = size > 1 and rng.random() < HOUSEHOLDS_RATES["family_email"]
    if family_email:
        family = _unique(rng, family.lower(), taken)
    parent_year = rng.randint(1945, 1990)
    kids = max(0, size - 2)
    twins = kids >= 2 and rng.random() < HOUSEHOLDS_RATES["twins"]
    members: list[_Member] = []
    kid_birthday = ""
    for k in range(size):
        if k == 0 and namesake:
            first = namesake.first
        else:
            pool = nz.MODERN_MALE if rng.random() < 0.5 else nz.MODERN_FEMALE
            named = [m.first for m in members]
            choices = [n for n in pool if not any(nz.related_names(n, t) for t in named)]
            first = nz.pick(rng, choices, 0.8)
        if k < 2:
            birthday = nz.random_date(rng, parent_year - 3, parent_year + 3)
        elif twins and k == size - 1:
            birthday = kid_birthday
        else:
            birthday = nz.random_date(rng, parent_year + 22, min(2015, parent_year + 40))
            kid_birthday = birthday
        if namesake and birthday == namesake.birthday:
            birthday = nz.date_error(rng, birthday, "year")
        email = family if family_email and rng.random() < 0.5 else _email(rng, first, last, birthday, taken)
        members.append(_Member(first, last, birthday, _mobile(rng, home.country), email.lower(), home))
    for m in members:
        if rng.random() < HOUSEHOLDS_RATES["moved"]:  # only people with 2+ records move (below)
            new = _home(rng, m.home.country, m.home.city if rng.random() < 0.5 else None)
            new.landline = new.landline if rng.random() < 0.5 else ""
            m.later = new
    return members


def _street_text(rng: random.Random, street: str, rates: dict[str, float]) -> str:
    number, *words = street.split(" ")
    suffix = words[-1]
    if rng.random() < 0.35:
        suffix = _SUFFIXES[suffix] + ("." if rng.random() < 0.3 else "")
    name = " ".join(words[:-1])
    if rng.random() < rates["street_typo"]:
        name = nz.typo(rng, name)
    return case(rng, f"{number} {name} {suffix}")


def _row(rng: random.Random, m: _Member, home: _Home, rates: dict[str, float]) -> dict[str, str]:
    first, roll = m.first, rng.random()
    if roll < rates["nickname"]:
        first = nz.nickname(rng, first)
    elif roll < rates["nickname"] + rates["initial"]:
        first = first[0]
    elif roll < rates["nickname"] + rates["initial"] + rates["first_name_typo"]:
        first = nz.typo(rng, first)
    last = nz.typo(rng, m.last) if rng.random() < rates["last_name_typo"] else m.last
    email = m.email
    if rng.random() < rates["email_typo"]:
        local, _, domain = email.partition("@")
        email = f"{nz.typo(rng, local)}@{domain}"
    phones = [p for p in (m.mobile, home.landline) if p]
    birthday = nz.date_error(rng, m.birthday) if rng.random() < rates["birthday_error"] else m.birthday
    city = nz.typo(rng, home.city) if rng.random() < rates["city_typo"] else home.city
    postal = home.postal_code
    if rng.random() < 0.2:
        postal = postal.replace(" ", "").lower() if home.country == "GB" else postal
    return {
        "first_name": case(rng, first),
        "last_name": case(rng, last),
        "email": maybe(rng, rates["missing_email"], email),
        "phone": maybe(rng, rates["missing_phone"], _phone_text(rng, rng.choice(phones))),
        "birthday": maybe(rng, rates["missing_birthday"], birthday),
        "street": maybe(rng, rates["missing_street"], _street_text(rng, home.street, rates)),
        "city": maybe(rng, rates["missing_city"], case(rng, city)),
        "postal_code": maybe(rng, rates["missing_postal_code"], postal),
        "country": maybe(rng, rates["missing_country"], rng.choice(_COUNTRY_SPELLINGS[home.country])),
    }


HOUSEHOLDS_COLUMNS = ["first_name", "last_name", "email", "phone", "birthday", "street", "city", "postal_code",
                      "country"]  # fmt: skip


def households_corpus(n_entities: int, seed: int) -> Generated:
    """``n_entities`` people in households; see `HOUSEHOLDS_RATES`. The truth's entity is the person;
    `household_of` gives the household."""
    rng = random.Random(f"households:{seed}")
    people: list[_Member] = []
    households: list[list[_Member]] = []
    taken: set[str] = set()
    while len(people) < n_entities:
        members = _household(rng, people, taken)[: n_entities - len(people)]
        households.append(members)
        people.extend(members)
    out = Rows("crm", "id", HOUSEHOLDS_COLUMNS)
    for h, members in enumerate(households):
        for k, member in enumerate(members):
            size = nz.skewed_size(rng, PERSON_RECORDS)
            moved_at = rng.randint(1, size - 1) if member.later and size > 1 else size
            for r in range(size):
                home = member.later if member.later and r >= moved_at else member.home
                out.add(f"p{h}.{k}", _row(rng, member, home, HOUSEHOLDS_RATES))
    return out.frames(rng)


def household_of(entity: str) -> str:
    """The household of a ``households`` truth entity (``p12.3`` -> ``p12``)."""
    return entity.rsplit(".", 1)[0]
