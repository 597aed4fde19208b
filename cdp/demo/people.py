"""A generated person, their devices, and the typos that make their records disagree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TypeVar

from cdp.demo.pools import City
from cdp.demo.shop import SLIPS

# ---------------------------------------------------------------------------------------- people
T = TypeVar("T")


def pick(r: Callable[[], float], seq: Sequence[T]) -> T:
    return seq[int(r() * len(seq))]


class Device:
    """A browser or an app install: one anonymousId, one context; `uid` is who is signed in on it."""

    __slots__ = ("anon_ids", "kind", "post", "pre", "shared", "uid")

    def __init__(self, kind: str, anon: str, pre: str, post: str) -> None:
        self.kind = kind  # web, ios, android
        self.anon_ids = f'"anonymousId":"{anon}"'
        self.pre, self.post = pre, post  # context JSON before and after "page"
        self.uid: str | None = None
        self.shared = False  # used by two people: every session starts signed out


class Person:
    __slots__ = (
        "addr", "birthday", "churned", "city", "company", "country", "devices", "dup_hs", "dup_sf", "email",
        "engaged", "entity", "first", "home", "in_hs", "in_sf", "index", "ip", "job_in", "last", "mobile",
        "moved_in", "old_addr", "old_job", "plain", "plan", "subscribed", "tier", "title", "user_id",
        "work_email",
    )  # fmt: skip

    def __init__(self, index: int, entity: str, country: str, city: City) -> None:
        self.index, self.entity, self.country, self.city = index, entity, country, city
        self.first = self.last = self.email = self.mobile = self.ip = self.moved_in = self.job_in = ""
        self.birthday = date(2000, 1, 1)
        self.addr: tuple[str, str, str] = ("", "", "")
        self.old_addr: tuple[str, str, str] | None = None
        self.home: str | None = None  # a landline shared by the household
        self.work_email: str | None = None
        self.company: str | None = None
        self.title: int | None = None  # index into _TITLES
        self.old_job: tuple[str, int] | None = None
        self.user_id: str | None = None
        self.tier = 0  # 0 browses, 1 buys, 2 high value
        self.churned = self.engaged = self.subscribed = False
        self.plan = "free"
        self.devices: list[Device] = []
        self.in_sf = self.in_hs = self.dup_sf = self.dup_hs = False
        self.plain = False  # a showcase hard case: CRM rows keep the name and address as they are


def typo(word: str, r: Callable[[], float]) -> str:
    """One realistic slip: a transposed, dropped, doubled or swapped letter (the first letter survives)."""
    if len(word) < 3:
        return word + word[-1]
    for _ in range(8):
        i, op = 1 + int(r() * (len(word) - 2)), r()
        if op < 0.3:
            out = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif op < 0.55:
            out = word[:i] + word[i + 1 :]
        elif op < 0.7:
            out = word[: i + 1] + word[i:]
        else:
            out = word[:i] + SLIPS.get(word[i], "e" if word[i] != "e" else "i") + word[i + 1 :]
        if out != word:
            return out
    return word + "e"
