"""First names: are two spellings the same person's name? (nicknames, initials, one typo).

Nicknames come from the published list of the `nicknames` package, plus a few curated groups."""

from __future__ import annotations

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
"""


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


def nicknames_of(name: str) -> frozenset[str]:
    """The names related to a cleaned first name as nickname and formal name, or spelling variants
    ('bob' -> robert, bobby, rob, ...); empty for a name without any."""
    return _RELATED.get(name, frozenset())


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


@lru_cache(maxsize=65_536)
def compatible(a: str, b: str) -> bool:
    """Could these two cleaned first names belong to one person?"""
    if not a or not b or a == b:
        return True
    if b in _RELATED.get(a, ()):
        return True
    if len(a) == 1 or len(b) == 1:  # an initial
        return a[0] == b[0]
    shorter = min(len(a), len(b))
    if shorter >= 2 and (a.startswith(b) or b.startswith(a)):
        return True
    return shorter >= 4 and _edits_at_most_one(a, b)
