"""``CDP.quality_samples``: the rows behind a quality count (the bad values a click away from `cdp quality`)."""

from __future__ import annotations

from typing import Any

import orjson

from cdp.events import COLUMNS as EVENT_COLUMNS
from cdp.events import event_dict
from cdp.identity.traits import record_source
from cdp.pagination import check_limit
from cdp.store import Store


class QualitySamples:
    def __init__(self, store: Store) -> None:
        self.store = store

    def event_names(self) -> list[str]:
        """Every event name the quality counters have seen (a small table: no scan of the events)."""
        rows = self.store.reader().execute(
            "SELECT DISTINCT name FROM quality_counters WHERE kind = 'events' AND name != '' ORDER BY name"
        )
        return [str(r[0]) for r in rows]

    def rejected(self) -> list[dict[str, Any]]:
        """Messages refused at the door, per source and event name: ``{"source", "event", "rejected"}``."""
        rows = self.store.reader().execute(
            "SELECT source, name, value FROM quality_counters WHERE kind = 'events' AND metric = 'rejected'"
            " AND value > 0 ORDER BY source, name"
        )
        return [{"source": source, "event": name, "rejected": int(value)} for source, name, value in rows]

    def events(
        self, source: str, event: str, flag: str | None = None, *, limit: int | None = 50
    ) -> list[dict[str, Any]]:
        """The newest stored events of ``source`` named ``event`` (or of that type) that validation flagged (with
        ``flag``, e.g. ``invalid:email``, or any flag), each with its flags and properties."""
        limit = check_limit(limit)
        # The report names a message without an event name (identify, group, alias) by its type.
        where = (
            "source = ? AND (event = ? OR (event IS NULL AND type = ?))"
            " AND quality_flags IS NOT NULL AND quality_flags != '[]'"
        )
        params: list[Any] = [source, event, event]
        if flag:
            where += " AND EXISTS (SELECT 1 FROM json_each(events.quality_flags) j WHERE j.value = ?)"
            params.append(flag)
        rows = self.store.query(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )
        return [{"id": r["id"], **event_dict(r)} for r in rows]

    def records(self, source: str, flag: str | None = None, *, limit: int | None = 50) -> list[dict[str, Any]]:
        """CRM records of ``source`` that validation flagged, each with its flags and fields."""
        limit = check_limit(limit)
        where = "source = ? AND quality_flags IS NOT NULL AND quality_flags != '[]'"
        params: list[Any] = [source]
        if flag:
            where += " AND EXISTS (SELECT 1 FROM json_each(source_records.quality_flags) j WHERE j.value = ?)"
            params.append(flag)
        cursor = self.store.reader().execute(
            f"SELECT * FROM source_records WHERE {where} ORDER BY id DESC LIMIT ?", [*params, limit]
        )
        columns = [d[0] for d in cursor.description]
        out = []
        for row in cursor:
            record = dict(zip(columns, row, strict=True))
            out.append(
                {
                    "source": record["source"],
                    "external_id": record["external_id"],
                    "profile_id": record["profile_id"],
                    "flags": orjson.loads(record["quality_flags"]),
                    "fields": {k: v for k, v in sorted(record_source(record).values.items()) if v not in (None, "")},
                }
            )
        return out
