"""``CDP.lineage``: where each of a profile's traits came from, and its CRM records side by side.

The console's person page shows, for every unified trait, the value chosen, the source and time it was
chosen from and the survivorship rule that chose it (`cdp.identity.traits.explain`), what the other sources
said; and every CRM record of the
profile with its canonical fields, so a marketer sees the disagreement that resolution settled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdp.identity.traits import TraitSource, explain, profile_sources, record_source
from cdp.settings import Settings
from cdp.store import Store


class Lineage:
    def __init__(self, store: Store, settings: Settings, live_id: Callable[[str], str]) -> None:
        self.store = store
        self.settings = settings
        self._live_id = live_id

    def _sources(self, profile_id: str) -> tuple[str, list[TraitSource]]:
        pid = self._live_id(profile_id)
        return pid, profile_sources(self.store.reader(), pid)

    def traits(self, profile_id: str) -> list[dict[str, Any]]:
        """One row per (dotted) trait, sorted by name: ``{"trait", "value", "source", "at", "rule", "others"}``
        where ``others`` lists what the other sources hold for it (``{"source", "value", "at"}``), newest first.
        The chosen value, its source and the rule that chose it are survivorship's own (`explain`: the profile's
        ``trait_sources``), so the page shows what the profile holds."""
        _, sources = self._sources(profile_id)
        chosen = explain(sources, self.settings.trait_priority, self.settings.trait_majority)
        out: list[dict[str, Any]] = []
        for key, pick in chosen.items():
            others = [
                {"source": src.source, "value": src.values[key], "at": src.at}
                for src in sorted(sources, key=lambda s: s.at or "", reverse=True)
                if src.values.get(key) not in (None, "")
                and not (src.source == pick["source"] and src.at == pick["at"] and src.values[key] == pick["value"])
            ]
            out.append(
                {
                    "trait": key,
                    "value": pick["value"],
                    "source": pick["source"],
                    "at": pick["at"],
                    "rule": pick["rule"],
                    "others": others,
                }
            )
        return out

    def records(self, profile_id: str) -> list[dict[str, Any]]:
        """The profile's CRM records, oldest first: ``{"source", "external_id", "updated_at", "fields"}`` with
        ``fields`` the record's canonical fields and other traits (dotted names)."""
        pid, _ = self._sources(profile_id)
        cursor = self.store.reader().execute("SELECT * FROM source_records WHERE profile_id = ? ORDER BY id", (pid,))
        columns = [d[0] for d in cursor.description]
        out = []
        for row in cursor:
            record = dict(zip(columns, row, strict=True))
            values = record_source(record).values
            out.append(
                {
                    "source": record["source"],
                    "external_id": record["external_id"],
                    "updated_at": record["updated_at"],
                    "fields": {k: v for k, v in sorted(values.items()) if v is not None and v != ""},
                }
            )
        return out
