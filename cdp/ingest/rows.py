"""The event-row contract: what validation (``cdp.ingest.tracking``) makes, the writer
(``cdp.ingest.storage``) inserts, and the followers of ``events_stored`` read, by field name.

A NamedTuple: as cheap to build, pickle (to the ingest writer process) and hand to ``executemany`` as the
plain tuple it replaces; its fields are the ``events`` columns in ``INSERT_EVENT``'s order.
"""

from __future__ import annotations

from typing import NamedTuple

from cdp.identity.graph import ObservationTuple
from cdp.quality import Tally


class EventRow(NamedTuple):
    message_id: str
    type: str
    event: str | None  # track: the event name; page/screen: the name; else None
    user_id: str | None
    anonymous_id: str | None
    group_id: str | None
    previous_id: str | None
    timestamp: str  # clock-corrected, ISO-8601 UTC
    original_timestamp: str | None
    sent_at: str | None
    received_at: str
    properties: str | None  # JSON text, or None when empty
    traits: str | None
    context: str | None
    integrations: str | None
    extra: str | None  # fields Segment's spec does not name, kept as JSON
    source: str  # the write key's name
    write_key_id: str
    quality_flags: str | None  # JSON list of what validation flagged
    profile_id: str | None = None  # set once stored: the profile the identity graph linked it to

    def stored(self, profile_id: str | None) -> EventRow:
        """This row as stored, with its profile."""
        return EventRow(*self[:-1], profile_id)

    @property
    def name(self) -> str:
        """What the data-quality counters call it: the event name of a track, else the type."""
        return self.event if self.type == "track" and self.event else self.type


INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (" + ", ".join(EventRow._fields) + ") VALUES ("
    + ", ".join("?" * len(EventRow._fields)) + ")"
)  # fmt: skip

# Validated rows, their identity observations, their (source, event name), the quality counters.
Batch = tuple[list[EventRow], list[ObservationTuple], list[tuple[str, str]], Tally]
# What the writer stored of a batch: (stored, duplicates, index in the batch of each stored row, its profile id).
Stored = tuple[int, int, list[int], list[str | None]]
