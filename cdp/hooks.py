"""``Hook``: the one way a part of the house lets others follow what it did, without importing them.

A hook is named after what happened (``events_stored``, ``records_changed``, ``schedule_changed``,
``external_change``, ``traits_refreshed``, the identity graph's ``profiles_merged``, resolution's
``run_succeeded``, stewardship's ``profiles_changed``); followers ``connect`` a function, and the owner
calls the hook with the event's arguments. The facade (``cdp.core``, ``cdp.wiring``) does the connecting,
so lower layers never import higher ones. A follower's error reaches the owner, which decides
(``call_each`` logs and goes on instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Hook(Generic[P]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._followers: list[Callable[P, object]] = []

    def connect(self, follower: Callable[P, object]) -> Callable[P, object]:
        """Call ``follower`` each time this happens (in the order they were connected)."""
        self._followers.append(follower)
        return follower

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell every follower; the first error stops the others and reaches the caller."""
        for follower in list(self._followers):
            follower(*args, **kwargs)

    def call_each(self, log: logging.Logger, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell every follower; an error is logged and the others are still told."""
        for follower in list(self._followers):
            try:
                follower(*args, **kwargs)
            except Exception:
                log.exception("a follower of %s failed", self.name)

    def __bool__(self) -> bool:
        return bool(self._followers)

    def __iter__(self) -> Iterator[Callable[P, object]]:
        return iter(list(self._followers))

    def __len__(self) -> int:
        return len(self._followers)
