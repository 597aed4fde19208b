"""Data quality: completeness, validity, uniqueness and timeliness, per source and event name.

Ingest jobs add to ``quality_counters`` inside their own transaction (:class:`Tally`); the report
joins those counters with what can be measured from the stored rows (field completeness and
shared emails of CRM records).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any

from cdp.store import Store
from cdp.timeutil import now_iso

CANONICAL_COLUMNS = {
    "email": "email",
    "phone": "phone",
    "first_name": "first_name",
    "last_name": "last_name",
    "birthday": "birthday",
    "address.street": "address_street",
    "address.city": "address_city",
    "address.postal_code": "address_postal_code",
    "address.country": "address_country",
    "company": "company",
    "title": "title",
}


class Tally:
    """Counter increments gathered while a request is validated, written with its rows."""

    __slots__ = ("maxima", "sums")

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str, str, str], float] = defaultdict(float)
        self.maxima: dict[tuple[str, str, str, str], float] = {}

    def add(self, kind: str, source: str, name: str, metric: str, value: float = 1.0) -> None:
        self.sums[(kind, source, name, metric)] += value

    def maximum(self, kind: str, source: str, name: str, metric: str, value: float) -> None:
        key = (kind, source, name, metric)
        if value > self.maxima.get(key, float("-inf")):
            self.maxima[key] = value

    def __bool__(self) -> bool:
        return bool(self.sums or self.maxima)

    def keep_sources(self, sources: set[str]) -> None:
        """Drop the counts of every other source."""
        self.sums = defaultdict(float, {k: v for k, v in self.sums.items() if k[1] in sources})
        self.maxima = {k: v for k, v in self.maxima.items() if k[1] in sources}

    def merge(self, other: Tally) -> None:
        for key, value in other.sums.items():
            self.sums[key] += value
        for key, value in other.maxima.items():
            self.maximum(*key, value)

    def write(self, conn: sqlite3.Connection) -> None:
        when = now_iso()
        if self.sums:
            conn.executemany(
                "INSERT INTO quality_counters (kind, source, name, metric, value, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " value = value + excluded.value, updated_at = excluded.updated_at",
                [(*key, value, when) for key, value in self.sums.items()],
            )
        if self.maxima:
            conn.executemany(
                "INSERT INTO quality_counters (kind, source, name, metric, value, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " value = max(value, excluded.value), updated_at = excluded.updated_at",
                [(*key, value, when) for key, value in self.maxima.items()],
            )


def _group(metrics: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "received": int(metrics.get("received", 0)),
        "stored": int(metrics.get("stored", 0)),
        "updated": int(metrics.get("updated", 0)),
        "duplicates_dropped": int(metrics.get("duplicates", 0)),
        "suppressed": int(metrics.get("suppressed", 0)),
        "rejected": int(metrics.get("rejected", 0)),
        "missing": {},
        "invalid": {},
    }
    for metric, value in sorted(metrics.items()):
        kind, _, field = metric.partition(":")
        if kind in ("missing", "invalid") and field:
            out[kind][field] = int(value)
    return out


class Quality:
    def __init__(self, store: Store) -> None:
        self.store = store

    def report(self) -> dict[str, Any]:
        rows = self.store.reader().execute(
            "SELECT kind, source, name, metric, value FROM quality_counters ORDER BY kind, source, name"
        )
        grouped: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for kind, source, name, metric, value in rows:
            grouped[(kind, source, name)][metric] = value

        events: list[dict[str, Any]] = []
        records: dict[str, dict[str, Any]] = {}
        for (kind, source, name), metrics in grouped.items():
            entry = _group(metrics)
            if kind == "events":
                entry["clock_skew"] = {
                    "skewed_messages": int(metrics.get("skewed", 0)),
                    "max_seconds": round(metrics.get("max_skew_seconds", 0.0), 3),
                }
                entry["late_messages"] = int(metrics.get("late", 0))
                events.append({"source": source, "event": name, **entry})
            else:
                records[source] = {"source": source, **entry}

        for source, stats in self._record_stats().items():
            records.setdefault(source, {"source": source, **_group({})}).update(stats)
        return {
            "generated_at": now_iso(),
            "events": events,
            "records": [records[s] for s in sorted(records)],
        }

    def _record_stats(self) -> dict[str, dict[str, Any]]:
        """Completeness of each canonical field and emails shared by several records, per source."""
        conn = self.store.reader()
        present = ", ".join(f"count({col})" for col in CANONICAL_COLUMNS.values())
        out: dict[str, dict[str, Any]] = {}
        for source, total, *counts in conn.execute(
            f"SELECT source, count(*), {present} FROM source_records GROUP BY source"
        ):
            out[source] = {
                "records": total,
                "completeness": {
                    field: round(count / total, 4) if total else 0.0
                    for field, count in zip(CANONICAL_COLUMNS, counts, strict=True)
                },
                "uniqueness": {"records_sharing_an_email": 0},
                "invalid": {},
            }
        for source, shared in conn.execute(
            "SELECT source, sum(n) FROM (SELECT source, email, count(*) AS n FROM source_records"
            " WHERE email IS NOT NULL GROUP BY source, email HAVING n > 1) GROUP BY source"
        ):
            out[source]["uniqueness"]["records_sharing_an_email"] = int(shared)
        # Validity from the records as stored now (their quality flags), so re-importing a file counts nothing twice.
        for source, flag, n in conn.execute(
            "SELECT r.source, j.value, count(*) FROM source_records r, json_each(r.quality_flags) j"
            " WHERE r.quality_flags IS NOT NULL GROUP BY r.source, j.value"
        ):
            kind, _, field = str(flag).partition(":")
            if kind == "invalid" and field:
                out[source]["invalid"][field] = int(n)
        return out
