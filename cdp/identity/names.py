"""First names: are two spellings the same person's name? (nicknames, initials, one typo)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_NOT_LETTERS = re.compile(r"[^a-z]")

# Nickname groups: every name in a group is compatible with every other.
_GROUPS = [
    "william bill billy will willy liam",
    "robert bob bobby rob robbie bert",
    "richard rick ricky dick rich richie",
    "elizabeth liz lizzie beth betty eliza libby lisa elisabeth",
    "katherine catherine kate katie kathy cathy kat kathryn kathleen",
    "margaret maggie meg peggy marge greta",
    "michael mike mikey mick mickey",
    "jonathan jon jonny john johnny jack",
    "james jim jimmy jamie",
    "joseph joe joey",
    "thomas tom tommy",
    "charles charlie chuck chas",
    "edward ed eddie ted teddy ned",
    "anthony tony",
    "christopher chris kit topher",
    "christina christine chris tina chrissy kristina kristen",
    "daniel dan danny",
    "david dave davey",
    "matthew matt matty",
    "nicholas nick nicky",
    "alexander alex al sasha xander",
    "alexandra alex sandra sasha lexi",
    "benjamin ben benny",
    "samuel sam sammy",
    "samantha sam sammy",
    "andrew andy drew",
    "stephen steven steve stevie",
    "patrick pat paddy",
    "patricia pat patty trish tricia",
    "jennifer jen jenny jenn",
    "jessica jess jessie",
    "rebecca becky becca",
    "susan sue suzy susie",
    "deborah debbie deb debra",
    "victoria vicky tori",
    "gregory greg",
    "timothy tim timmy",
    "peter pete",
    "kenneth ken kenny",
    "ronald ron ronnie",
    "donald don donnie",
    "lawrence larry laurence",
    "frederick fred freddie",
    "francis frank frankie",
    "henry harry hank",
    "theodore theo ted teddy",
    "nathaniel nathan nate",
    "zachary zach zack",
    "joshua josh",
    "abigail abby abbie",
    "amanda mandy",
    "barbara barb barbie",
    "dorothy dot dottie",
    "eleanor ellie nora",
    "gabriel gabe",
    "gabrielle gabby",
    "jacqueline jackie",
    "josephine jo josie",
    "judith judy",
    "kimberly kim",
    "madeline maddie madeleine",
    "melissa mel missy",
    "nancy nan",
    "pamela pam",
    "sarah sara sally",
    "teresa theresa terri tess",
    "valerie val",
    "cynthia cindy",
    "leonard leo len lenny",
    "raymond ray",
    "walter walt wally",
    "albert al bert",
    "alfred alf fred",
    "douglas doug",
    "jeffrey jeff geoffrey",
    "phillip philip phil",
    "vincent vince vinny",
    "mathew matthew",
    "miguel mike",
    "jose pepe",
    "francisco paco pancho",
    "guillermo memo",
    "alejandro alex",
]


def clean(name: object) -> str:
    """Lower-case ASCII letters only: 'José-María' -> 'josemaria'."""
    if not isinstance(name, str):
        return ""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return _NOT_LETTERS.sub("", folded)


def _build() -> dict[str, frozenset[int]]:
    roots: dict[str, set[int]] = {}
    for index, group in enumerate(_GROUPS):
        for name in group.split():
            roots.setdefault(name, set()).add(index)
    return {name: frozenset(groups) for name, groups in roots.items()}


_ROOTS = _build()


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
    if _ROOTS.get(a, frozenset()) & _ROOTS.get(b, frozenset()):
        return True
    if len(a) == 1 or len(b) == 1:  # an initial
        return a[0] == b[0]
    shorter = min(len(a), len(b))
    if shorter >= 2 and (a.startswith(b) or b.startswith(a)):
        return True
    return shorter >= 4 and _edits_at_most_one(a, b)
