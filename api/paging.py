"""The ``?limit=`` and ``?cursor=`` of every list route, as typed aliases: ``limit: PageLimit = 100``,
``cursor: PageCursor = None`` (a page of at most 1,000; the cursor is the ``cursor.next`` of the page before)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

PageLimit = Annotated[int, Query(ge=1, le=1000)]
PageCursor = Annotated[str | None, Query()]
