"""First names: are two spellings the same person's name? (nicknames, initials, typos, short forms).

Nicknames come from the published list of the `nicknames` package, plus curated groups. The names
these lists know (`is_known`) are also the dictionary that a misspelt name is corrected against: a
spelling the lists do not know that is one typo away from one they do (``thoams`` -> thomas) is
related to that name's nicknames too (``tom``)."""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from functools import lru_cache

import nicknames

_NOT_LETTERS = re.compile(r"[^a-z]")

# Nicknames: the published list of the `nicknames` package (Carlton Northern's hand-curated English
# names and nicknames, Apache-2.0): two names are related when it lists one as a nickname of the other
# (one hop: Bill is a nickname of both Robert and William, which does not make them one name).
# Added to it: cdp's earlier curated groups (every name in a group related to every other), which also
# hold spelling variants and nicknames the list lacks (William / Liam, Katherine / Catherine, Stephen /
# Steven, Robert / Robbie, Spanish hypocorisms such as Pepe and Paco).
_GROUPS = """
william bill billy will willy liam | robert bob bobby rob robbie bert | richard rick ricky dick rich richie
elizabeth liz lizzie beth betty eliza libby lisa elisabeth bess elsie
katherine catherine kate katie kathy cathy kat kathryn kathleen kit | margaret maggie meg peggy marge greta madge
michael mike mikey mick mickey | jonathan jon jonny john johnny jack | james jim jimmy jamie
joseph joe joey jo | thomas tom tommy | charles charlie chuck chas | edward ed eddie ted teddy ned | anthony tony
christopher chris kit topher | christina christine chris tina chrissy kristina kristen | daniel dan danny
david dave davey | matthew matt matty mathew | nicholas nick nicky | alexander alex al sasha xander sandy
alexandra alex sandra sasha lexi sandy | benjamin ben benny | samuel sam sammy | samantha sam sammy
andrew andy drew | stephen steven steve stevie | patrick pat paddy | patricia pat patty trish tricia
jennifer jen jenny jenn | jessica jess jessie | rebecca becky becca | susan sue suzy susie | deborah debbie deb debra
victoria vicky vicki tori | gregory greg | timothy tim timmy | peter pete | kenneth ken kenny | ronald ron ronnie
donald don donnie | lawrence larry laurence laurie | frederick fred freddie fritz | francis frank frankie fran
frances fran frannie | henry harry hank | harold harry hal | theodore theo ted teddy | nathaniel nathan nate nat
zachary zach zack | joshua josh | jacob jake | abigail abby abbie | amanda mandy
barbara barb barbie babs | dorothy dot dottie dolly | eleanor ellie nora nell nellie | helen nell nellie
gabriel gabe | gabrielle gabby | jacqueline jackie | josephine jo josie | judith judy | kimberly kim
madeline maddie madeleine | mary molly polly mae | melissa mel missy | nancy nan | pamela pam
sarah sara sally sadie | teresa theresa terri tess tessa | valerie val | virginia ginny | cynthia cindy
angela angie | leonard leo len lenny | raymond ray | walter walt wally | albert al bert bertie
alfred alf fred alfie | arthur art artie | gerald gerry jerry | eugene gene | douglas doug
jeffrey jeff geoffrey | phillip philip phil | vincent vince vinny | miguel mike | jose pepe
francisco paco pancho | guillermo memo | alejandro alex
isabella isabel izzy izzie issy bella | evelyn evie eve | imogen immy | olivia liv livvy | sophia sophie
charlotte lottie | harriet hattie | penelope penny | florence flo flossie | eleanor elly | archibald archie
theodora thea | amelia millie | emily emmy | georgina georgie | matthew matt mathieu matthieu matteo mateo
dmitri dmitry dimitri dima | svetlana sveta | ekaterina katya | mikhail misha | pavel pasha
giuseppe beppe | giovanni gianni | johannes hans | jacqueline jacquie
"""
"""The last lines: common modern and international diminutives and cognates the published list lacks."""


def clean(name: object) -> str:
    """Lower-case ASCII letters only: 'José-María' -> 'josemaria'."""
    if not isinstance(name, str):
        return ""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return _NOT_LETTERS.sub("", folded)


def _build() -> dict[str, frozenset[str]]:
    related: dict[str, set[str]] = {}

    def relate(a: str, b: str) -> None:
        if a and b and a != b:
            related.setdefault(a, set()).add(b)
            related.setdefault(b, set()).add(a)

    for formal, relationship, nickname in nicknames.name_triplets():
        # the list's only relationship so far; a few initials ("l.r.") are left out
        if relationship == "has_nickname" and formal.isalpha() and nickname.isalpha():
            relate(clean(formal), clean(nickname))
    for group in _GROUPS.replace("\n", " | ").split("|"):
        for a, b in itertools.combinations(group.split(), 2):
            relate(a, b)
    return {name: frozenset(others) for name, others in related.items()}


_RELATED = _build()
_VOWELS = frozenset("aeiouy")


def _deletions(name: str) -> set[str]:
    return {name[:i] + name[i + 1 :] for i in range(len(name))}


def _index() -> dict[str, frozenset[str]]:
    """Known name with one letter removed -> the known names (finds substitutions, transpositions and
    dropped letters with a few dictionary lookups instead of a scan)."""
    index: dict[str, set[str]] = {}
    for name in _RELATED:
        for key in _deletions(name):
            index.setdefault(key, set()).add(name)
    return {key: frozenset(names) for key, names in index.items()}


_ONE_LETTER_LESS = _index()

MIN_CORRECTED = 4
"""A spelling the lists do not know is corrected to known names by substitution, swap or a dropped
letter only from this length on: shorter ones (Wei, Yan, Jin) are mostly real names outside the
(English) lists, and one edit reaches many names. A doubled letter is removed at any length."""


def is_known(name: str) -> bool:
    """True for a cleaned first name that the nickname lists hold (as a formal name or a nickname)."""
    return name in _RELATED


def nicknames_of(name: str) -> frozenset[str]:
    """The names related to a cleaned first name as nickname and formal name, or spelling variants
    ('bob' -> robert, bobby, rob, ...); empty for a name without any."""
    return _RELATED.get(name, frozenset())


def _squeeze(name: str) -> str:
    """Runs of one letter as one letter ('mollly' -> 'moly')."""
    return "".join(c for i, c in enumerate(name) if i == 0 or c != name[i - 1])


def _gender_ending(a: str, b: str) -> bool:
    """Equal but for a different final vowel (Julio / Julia, Dana / Dani): a variant, not a typo."""
    return len(a) == len(b) and a[:-1] == b[:-1] and a[-1] in _VOWELS and b[-1] in _VOWELS


@lru_cache(maxsize=65_536)
def corrections(name: str) -> frozenset[str]:
    """The known names a spelling the lists do not know is probably a typo of: one letter doubled by
    mistake (``mollly`` -> molly, ``all`` -> al); from `MIN_CORRECTED` letters also one substitution or
    adjacent transposition, or one dropped letter (``jesica`` -> jessica). Empty for a known name.

    An extra letter is removed only where it repeats its neighbour (a real name that is a known name
    plus a letter, Dana or Jane, is no typo of it); a different final vowel is a variant, not a typo
    (Julio / Julia); and a spelling whose candidates are different names (Dana: Dani, Dina, Dona ...;
    Mario: Maria, Marion, Margo) is more likely a name of its own: the candidates are used only when
    they agree, i.e. are all within one edit of each other (Nicoole: Nicole, Nichole)."""
    if name in _RELATED or len(name) < 3:
        return frozenset()
    found = {name[:i] + name[i + 1 :] for i in range(1, len(name)) if name[i] == name[i - 1]} & _RELATED.keys()
    if len(name) >= MIN_CORRECTED:
        found |= _ONE_LETTER_LESS.get(name, frozenset())  # a letter dropped from a known name
        for shorter in _deletions(name):
            found |= {n for n in _ONE_LETTER_LESS.get(shorter, ()) if len(n) == len(name)}  # substitution, swap
    found = {n for n in found if _edits_at_most_one(name, n) and not _gender_ending(name, n)}
    if any(not _edits_at_most_one(x, y) for x, y in itertools.combinations(sorted(found), 2)):
        return frozenset()
    return frozenset(found)


def _readings(name: str) -> frozenset[str]:
    return corrections(name) | {name}


def _related(a: str, b: str) -> bool:
    return a == b or b in _RELATED.get(a, ())


def _vowel_headed() -> dict[str, frozenset[str]]:
    """Letters 2-4 of known names that start with a vowel -> those names (olivia: 'liv')."""
    index: dict[str, set[str]] = {}
    for name in _RELATED:
        if len(name) > 4 and name[0] in _VOWELS:
            index.setdefault(name[1:4], set()).add(name)
    return {key: frozenset(names) for key, names in index.items()}


_VOWEL_HEADED = _vowel_headed()


def related_names(name: str) -> frozenset[str]:
    """Known names related to a cleaned first name through the lists: its nicknames and formal forms;
    for a misspelling (`corrections`) the corrected names and theirs; for a three-letter short form the
    lists do not know, the known names it starts once their first vowel is dropped (liv: olivia).
    What a matching row carries (`cdp.identity.matching.prepare`) so that SQL can test the relation
    with a substring search on either side."""
    out = set(nicknames_of(name))
    for corrected in corrections(name):
        out |= {corrected} | nicknames_of(corrected)
    if len(name) == 3 and name not in _RELATED:
        out |= _VOWEL_HEADED.get(name, frozenset())
    if name not in _RELATED:
        out |= contracted_from(name)
    out.discard(name)
    return frozenset(out)


def _is_contraction(short: str, long: str) -> bool:
    """``short`` is a written contraction of ``long``: its first and last letters, and the letters between
    in order (Wm / William, Jas / James, Thos / Thomas, Robt / Robert, Saml / Samuel)."""
    if not (2 <= len(short) <= len(long) - 2) or short[0] != long[0] or short[-1] != long[-1]:
        return False
    rest = iter(long[1:-1])
    return all(ch in rest for ch in short[1:-1])


@functools.cache
def _by_ends() -> dict[tuple[str, str], tuple[str, ...]]:
    index: dict[tuple[str, str], list[str]] = {}
    for name in _RELATED:
        if len(name) >= 4:
            index.setdefault((name[0], name[-1]), []).append(name)
    return {key: tuple(sorted(names)) for key, names in index.items()}


def contracted_from(name: str) -> frozenset[str]:
    """Known names that an unknown short name (2-5 letters) is a contraction of (`_is_contraction`)."""
    if not 2 <= len(name) <= 5 or name in _RELATED:
        return frozenset()
    return frozenset(long for long in _by_ends().get((name[0], name[-1]), ()) if _is_contraction(name, long))


def _edits_at_most_one(a: str, b: str) -> bool:
    """True when one substitution, insertion, deletion or adjacent transposition turns a into b."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diffs) <= 1:
            return True
        return (
            len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def one_edit_apart(a: str, b: str) -> bool:
    """Equal, or one substitution, insertion, deletion or adjacent transposition apart."""
    return a == b or _edits_at_most_one(a, b)


def edits(a: str, b: str) -> int:
    """Substitutions, insertions, deletions and adjacent transpositions that turn a into b (optimal string
    alignment distance)."""
    if a == b:
        return 0
    before: list[int] | None = None
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
            if before is not None and i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[-1]


def _short_form(short: str, long: str) -> bool:
    """``short``, three letters, starts ``long`` once its first letter, a vowel, is dropped (Liv / Olivia)."""
    return len(short) == 3 and len(long) > 4 and long[0] in _VOWELS and long[1:].startswith(short)


@lru_cache(maxsize=65_536)
def compatible(a: str, b: str) -> bool:
    """Could these two cleaned first names belong to one person?

    Used where other strong evidence already links the two (a shared email or phone): it says no only
    to names that are plainly different, so that two household members sharing a landline or a family
    address stay apart. Yes for: equal names; a nickname or formal form of the other (published list and
    curated groups); an initial; a short form that starts the other (Jon / Jonathan); one typo when the
    shorter has 4 letters or more; one typo between a known name and a spelling the lists do not know
    (Amy / Ay, Gary / Gry); a nickname of a corrected misspelling (Tom / Thoams, Nikki / Nicoole, Evelyn /
    Evelyyn vs Eeelyn); a short form of a name with its first vowel dropped, when the lists do not know
    the short form (Liv / Olivia). Two names the lists both know and do not relate stay unrelated beyond
    the first rules: Mary / Mark or Tim / Tom are two names, not a typo (a household shares a landline)."""
    if not a or not b or a == b:
        return True
    if b in _RELATED.get(a, ()):
        return True
    if len(a) == 1 or len(b) == 1:  # an initial
        return a[0] == b[0]
    shorter = min(len(a), len(b))
    if shorter >= 2 and (a.startswith(b) or b.startswith(a)):
        return True
    known_a, known_b = a in _RELATED, b in _RELATED
    if known_a and known_b:
        return False  # the lists know both names and do not relate them (Mary / Mark: two people, not a typo)
    if shorter >= 4 and _edits_at_most_one(a, b):
        return True
    squeezed_a, squeezed_b = _squeeze(a), _squeeze(b)
    if squeezed_a == squeezed_b or (
        min(len(squeezed_a), len(squeezed_b)) >= 4 and _edits_at_most_one(squeezed_a, squeezed_b)
    ):
        return True  # one typo apart once letters typed twice are not counted (Tyyler / Tiler, Luuc / Luc)
    short, long = (a, b) if (len(a), known_a) < (len(b), known_b) else (b, a)
    if short not in _RELATED and long in _RELATED and _dropped_or_swapped(short, long):
        return True  # a short known name with a letter dropped or two swapped (Amy / Ay, Gary / Gry, Ana / Aan)
    if short not in _RELATED and _is_contraction(short, long):
        return True  # a written contraction (Wm / William, Thos / Thomas)
    if any(_related(x, y) for x in _readings(a) for y in _readings(b)):
        return True  # a nickname of a corrected misspelling (Tom / Thoams, Nikki / Nicoole)
    return short not in _RELATED and _short_form(short, long)


def _dropped_or_swapped(short: str, long: str) -> bool:
    if len(short) == len(long):
        diffs = [i for i in range(len(short)) if short[i] != long[i]]
        return len(diffs) == 2 and diffs[1] == diffs[0] + 1 and _edits_at_most_one(short, long)
    return len(long) == len(short) + 1 and _edits_at_most_one(short, long)
