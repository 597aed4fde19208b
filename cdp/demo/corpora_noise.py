"""Error models and small value lists for the hard person corpora (`cdp.demo.corpora`).

These are deliberately unlike `cdp.demo.generator`'s: keyboard typos of every kind (insert, delete,
substitute, transpose adjacent), OCR confusions of scanned registers (rn/m, l/1/i, e/c, u/n), dates with
one wrong digit or day and month swapped, e-mail local parts with a typo, nicknames from the published
list of the `nicknames` package, initials and the clerks' abbreviations of old registers (Wm., Thos.).
Every function takes the caller's seeded `random.Random`: same seed, same output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date
from functools import lru_cache

import nicknames
import pandas as pd

Generated = tuple[pd.DataFrame, pd.DataFrame]
"""(records, truth): the records and their ``[source, external_id, entity]`` rows."""


def _words(text: str) -> list[str]:
    return text.split()


# -- value lists: popular names first, weights fall off like real name frequencies (Zipf) --------------
MODERN_MALE = _words(
    "james john robert michael william david richard joseph thomas charles christopher daniel matthew "
    "anthony mark donald steven paul andrew joshua kenneth kevin brian george timothy ronald edward jason "
    "jeffrey ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon benjamin samuel "
    "gregory alexander patrick frank raymond jack dennis jerry tyler aaron jose adam nathan henry peter"
)
MODERN_FEMALE = _words(
    "mary patricia jennifer linda elizabeth barbara susan jessica sarah karen lisa nancy betty margaret "
    "sandra ashley kimberly emily donna michelle carol amanda dorothy melissa deborah stephanie rebecca "
    "sharon laura cynthia kathleen amy angela shirley anna brenda pamela emma nicole helen samantha "
    "katherine christine debra rachel carolyn janet catherine maria heather diane ruth julie olivia joyce"
)
MODERN_SURNAMES = _words(
    "smith johnson williams brown jones garcia miller davis wilson anderson taylor thomas moore jackson "
    "martin lee thompson white harris clark lewis robinson walker young allen king wright scott green baker "
    "adams nelson hill campbell mitchell roberts carter phillips evans turner parker collins edwards stewart "
    "morris murphy cook rogers morgan peterson cooper reed bailey bell kelly howard ward cox richardson wood "
    "watson brooks bennett gray james hughes price sanders myers long ross foster powell jenkins perry "
    "russell sullivan fisher henderson coleman simmons patterson jordan reynolds hamilton graham wallace "
    "west cole hayes gibson bryant ellis stevens murray ford marshall owens mcdonald harrison kennedy wells "
    "dixon robertson black daniels palmer mills nichols grant knight ferguson rose stone hawkins dunn "
    "perkins hudson spencer gardner stephens payne pierce berry matthews arnold wagner willis ray watkins"
)
MODERN_CITIES = _words(
    "london manchester birmingham leeds glasgow sheffield bristol liverpool leicester edinburgh coventry "
    "bradford cardiff belfast nottingham newcastle brighton hull plymouth derby southampton portsmouth "
    "york oxford cambridge norwich exeter bath reading swindon"
)
MAIL_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com", "btinternet.com")

# Names of 19th-century English registers, most frequent first.
OLD_MALE = _words(
    "john william thomas james george joseph henry charles richard robert samuel edward benjamin david "
    "frederick isaac edwin alfred daniel peter matthew francis walter arthur stephen abraham jonathan "
    "albert ernest harry"
)
OLD_FEMALE = _words(
    "mary elizabeth ann sarah jane hannah emma ellen margaret martha alice susannah eliza harriet "
    "catherine maria charlotte frances emily esther louisa caroline rebecca agnes lucy betsy clara "
    "fanny isabella rachel"
)
OLD_SURNAMES = _words(
    "smith jones williams taylor brown davies evans wilson thomas johnson roberts robinson thompson wright "
    "walker white edwards hughes green hall lewis harris clarke jackson wood turner martin cooper "
    "hill ward morris moore clark lee king baker harrison morgan allen james scott phillips watson davis "
    "parker price bennett young griffiths mitchell kelly cook carter richardson bailey collins bell shaw "
    "murphy miller cox richards marshall anderson simpson ellis adams wilkinson foster "
    "chapman powell webb rogers gray mason hunt campbell matthews owen palmer holmes mills "
    "barnes knight lloyd butler russell barker fisher stevens jenkins murray dixon harvey"
)
OLD_TOWNS = (
    ("norwich", "NR"), ("ipswich", "IP"), ("colchester", "CO"), ("cambridge", "CB"), ("peterborough", "PE"),
    ("lincoln", "LN"), ("york", "YO"), ("leeds", "LS"), ("bradford", "BD"), ("halifax", "HX"),
    ("sheffield", "S"), ("derby", "DE"), ("nottingham", "NG"), ("leicester", "LE"), ("coventry", "CV"),
    ("oxford", "OX"), ("reading", "RG"), ("bath", "BA"), ("exeter", "EX"), ("truro", "TR"),
)  # fmt: skip
BIRTH_PLACES = (
    "norwich", "kings lynn", "great yarmouth", "swaffham", "diss", "ipswich", "bury st edmunds", "sudbury",
    "colchester", "chelmsford", "cambridge", "ely", "wisbech", "peterborough", "lincoln", "boston", "york",
    "leeds", "wakefield", "bradford", "halifax", "huddersfield", "sheffield", "rotherham", "derby",
    "nottingham", "leicester", "coventry", "oxford", "banbury", "reading", "bath", "exeter", "truro",
    "london", "ireland", "scotland",
)  # fmt: skip
# A register's spellings of the same place.
PLACE_VARIANTS = {
    "kings lynn": ("king's lynn", "lynn", "kings lynn norfolk"),
    "great yarmouth": ("yarmouth", "gt yarmouth"),
    "bury st edmunds": ("bury", "bury st. edmunds"),
    "london": ("middlesex london", "st pancras", "lambeth"),
    "norwich": ("norwich norfolk", "city of norwich"),
    "york": ("york yorkshire", "city of york"),
}
# Occupations as enumerators wrote them: canonical -> variants (the first is the canonical spelling).
OCCUPATIONS = {
    "agricultural labourer": ("ag lab", "ag. lab.", "agricultural labourer", "agric labourer", "farm labourer"),
    "domestic servant": ("servant", "dom serv", "general servant", "domestic servant", "house servant"),
    "coal miner": ("coal miner", "miner", "coal hewer", "collier"),
    "cotton weaver": ("cotton weaver", "weaver", "power loom weaver", "cotton wvr"),
    "scholar": ("scholar", "schollar", "at school"),
    "blacksmith": ("blacksmith", "smith", "black smith"),
    "carpenter": ("carpenter", "joiner", "carpenter & joiner"),
    "dressmaker": ("dressmaker", "dress maker", "seamstress"),
    "farmer": ("farmer", "farmer of 40 acres", "farmer 120 acres"),
    "shoemaker": ("shoemaker", "shoe maker", "cordwainer", "boot maker"),
    "laundress": ("laundress", "washerwoman", "washer woman"),
    "bricklayer": ("bricklayer", "brick layer", "bricklayers labourer"),
    "wife": ("wife", "housewife", "house keeper"),
    "tailor": ("tailor", "taylor", "journeyman tailor"),
    "railway porter": ("railway porter", "porter", "rly porter"),
}
OLD_ABBREVIATIONS = {
    "william": ("wm", "wm.", "willm"), "james": ("jas", "jas."), "thomas": ("thos", "thos."),
    "george": ("geo", "geo."), "charles": ("chas", "chas."), "john": ("jno", "jno."), "joseph": ("jos", "jos."),
    "elizabeth": ("eliz", "eliz.", "elizth"), "samuel": ("saml", "saml."), "richard": ("richd", "richd."),
    "robert": ("robt", "robt."), "edward": ("edwd", "edw."), "henry": ("hy", "hy.", "henery"),
    "benjamin": ("benj", "benjn"), "margaret": ("margt", "margt."), "frederick": ("fredk", "fred."),
    "hannah": ("hanh",), "daniel": ("danl",), "susannah": ("susan", "susanna"), "catherine": ("cath", "kath."),
}  # fmt: skip
SURNAME_VARIANTS = {
    "smith": ("smyth", "smithe"), "thompson": ("thomson", "tompson"), "clarke": ("clark",), "clark": ("clarke",),
    "davies": ("davis",), "davis": ("davies",), "griffiths": ("griffith",), "matthews": ("mathews",),
    "phillips": ("philips",), "harrison": ("harison",), "allen": ("allan", "allin"), "gray": ("grey",),
    "hughes": ("hewes",), "brown": ("browne",), "cooper": ("couper",), "wilkinson": ("wilkenson",),
}  # fmt: skip

# -- drawing ----------------------------------------------------------------------------------------


def zipf_weights(n: int, exponent: float = 1.0) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(n)]


def pick(rng: random.Random, values: Sequence[str], exponent: float = 1.0) -> str:
    """A value drawn with Zipf weights by position (the first is the most common)."""
    return rng.choices(values, weights=zipf_weights(len(values), exponent))[0]


def skewed_size(rng: random.Random, table: Sequence[tuple[int, float]]) -> int:
    """A record count from a {count: weight} table."""
    counts, weights = zip(*table, strict=True)
    return int(rng.choices(counts, weights=weights)[0])


# -- character errors -------------------------------------------------------------------------------
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _i, _ch in enumerate(_row):
        _near = _row[max(0, _i - 1) : _i] + _row[_i + 1 : _i + 2]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                _near += _ROWS[_other][max(0, _i - 1) : _i + 1]
        _NEAR[_ch] = _near
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _near_key(rng: random.Random, ch: str) -> str:
    near = _NEAR.get(ch.lower())
    if near and rng.random() < 0.75:
        return rng.choice(near)
    return rng.choice(_LETTERS)


def typo(rng: random.Random, text: str, kind: str | None = None) -> str:
    """One keyboard error: ``insert``, ``delete``, ``substitute`` or ``transpose`` (adjacent)."""
    if len(text) < 2:
        return text + _near_key(rng, text or "a")
    kind = kind or rng.choice(("insert", "delete", "substitute", "transpose"))
    i = rng.randrange(len(text))
    if kind == "insert":  # a neighbouring key, or the same letter typed twice
        extra = text[i] if rng.random() < 0.4 else _near_key(rng, text[i])
        return text[: i + 1] + extra + text[i + 1 :]
    if kind == "delete":
        return text[:i] + text[i + 1 :]
    if kind == "substitute":
        other = _near_key(rng, text[i])
        while other == text[i].lower():
            other = _near_key(rng, text[i])
        return text[:i] + other + text[i + 1 :]
    j = min(i, len(text) - 2)
    swapped = text[:j] + text[j + 1] + text[j] + text[j + 2 :]
    return swapped if swapped != text else typo(rng, text, "substitute")


# Confusions of print and handwriting read by OCR or a transcriber, both ways.
_OCR = (("rn", "m"), ("m", "rn"), ("l", "1"), ("l", "i"), ("i", "l"), ("1", "l"), ("e", "c"), ("c", "e"),
        ("u", "n"), ("n", "u"), ("cl", "d"), ("h", "b"), ("o", "0"), ("vv", "w"), ("a", "o"))  # fmt: skip


def ocr(rng: random.Random, text: str) -> str:
    """One OCR-like confusion where the text allows one (else a keyboard typo)."""
    options = [(a, b) for a, b in _OCR if a in text.lower()]
    if not options:
        return typo(rng, text)
    a, b = rng.choice(options)
    lowered = text.lower()
    starts = [i for i in range(len(lowered)) if lowered.startswith(a, i)]
    i = rng.choice(starts)
    return text[:i] + b + text[i + len(a) :]


# -- dates ------------------------------------------------------------------------------------------


def valid_date(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def date_error(rng: random.Random, iso: str, kind: str | None = None) -> str:
    """``digit``: one digit of the day or month wrong; ``swap``: day and month swapped (when both are
    months); ``year``: one digit of the year wrong (mostly the last: 1971 -> 1917 is rarer)."""
    y, m, d = int(iso[:4]), int(iso[5:7]), int(iso[8:10])
    kind = kind or rng.choices(("digit", "swap", "year"), weights=(0.45, 0.2, 0.35))[0]
    if kind == "swap" and d <= 12 and d != m:
        return valid_date(y, d, m) or iso
    for _ in range(50):
        if kind == "year":
            digits = list(f"{y:04d}")
            pos = rng.choices((3, 2, 1), weights=(0.7, 0.25, 0.05))[0]
            digits[pos] = rng.choice([c for c in "0123456789" if c != digits[pos]])
            found = valid_date(int("".join(digits)), m, d)
        else:
            text = list(f"{m:02d}{d:02d}")
            pos = rng.randrange(4)
            text[pos] = rng.choice([c for c in "0123456789" if c != text[pos]])
            found = valid_date(y, int("".join(text[:2])), int("".join(text[2:])))
        if found and found != iso:
            return found
    return iso


def random_date(rng: random.Random, first_year: int, last_year: int) -> str:
    start, end = date(first_year, 1, 1).toordinal(), date(last_year, 12, 31).toordinal()
    return date.fromordinal(rng.randint(start, end)).isoformat()


# -- names ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _nickname_table() -> dict[str, tuple[str, ...]]:
    """Formal name -> its nicknames in the published list (sorted: the output must not depend on set order)."""
    table: dict[str, set[str]] = {}
    for formal, relationship, nick in nicknames.name_triplets():
        if relationship == "has_nickname" and formal.isalpha() and nick.isalpha() and len(nick) > 1:
            table.setdefault(formal.lower(), set()).add(nick.lower())
    return {name: tuple(sorted(nicks)) for name, nicks in table.items()}


def nicknames_of(name: str) -> tuple[str, ...]:
    return _nickname_table().get(name.lower(), ())


@lru_cache(maxsize=1)
def _related_table() -> dict[str, frozenset[str]]:
    """Name -> the names it is one with: its nicknames, its formal names and their other nicknames."""
    related: dict[str, set[str]] = {}
    for formal, nicks in _nickname_table().items():
        group = {formal, *nicks}
        for name in group:
            related.setdefault(name, set()).update(group)
    return {name: frozenset(group) for name, group in related.items()}


def related_names(a: str, b: str) -> bool:
    """True when one name is a nickname of the other, or both nicknames of one name (Bob, Rob)."""
    a, b = a.lower(), b.lower()
    return a == b or b in _related_table().get(a, frozenset())


def nickname(rng: random.Random, name: str) -> str:
    """A nickname of ``name`` from the published list (the name itself when it has none)."""
    found = nicknames_of(name)
    return rng.choice(found) if found else name


def title_case(text: str) -> str:
    return " ".join(part[:1].upper() + part[1:] for part in text.split(" "))


# -- output ----------------------------------------------------------------------------------------
class Rows:
    """Records and their truth, built row by row."""

    def __init__(self, source: str, id_column: str, columns: list[str]) -> None:
        self.source, self.id_column, self.columns = source, id_column, columns
        self.rows: list[dict[str, str]] = []
        self.entities: list[str] = []

    def add(self, entity: str, row: dict[str, str]) -> None:
        self.rows.append(row)
        self.entities.append(entity)

    def frames(self, rng: random.Random) -> Generated:
        """Rows in a shuffled order (one entity's records are not neighbours), ids given after the shuffle
        (an id says nothing about the entity)."""
        order = list(range(len(self.rows)))
        rng.shuffle(order)
        ids = [f"r{k + 1:07d}" for k in range(len(order))]
        records = pd.DataFrame([self.rows[i] for i in order], columns=self.columns).fillna("")
        records.insert(0, self.id_column, ids)
        truth = pd.DataFrame(
            {"source": self.source, "external_id": ids, "entity": [self.entities[i] for i in order]},
            columns=["source", "external_id", "entity"],
        )
        return records, truth


def case(rng: random.Random, text: str) -> str:
    roll = rng.random()
    return text.upper() if roll < 0.1 else text.lower() if roll < 0.2 else title_case(text)


def maybe(rng: random.Random, rate: float, value: str) -> str:
    """``value``, or missing with probability ``rate``."""
    return "" if rng.random() < rate else value
