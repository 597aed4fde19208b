"""What a privacy request would touch, before anyone sends it: the confirmation step of the console.

``CDP.privacy_preview.preview(identifiers)`` finds the subject exactly as a request does (the same
normalisation and the same walk from identifiers to live profiles and every profile merged into them) and
counts what is stored about them, without changing anything.
"""

from __future__ import annotations

from typing import Any

from cdp.chunks import chunked, marks
from cdp.privacy import subject
from cdp.profiles import Profiles
from cdp.settings import Settings
from cdp.store import Store

SHOWN_IDENTIFIERS = 50
"""At most this many identifiers are named per profile (the count is always complete)."""


class PrivacyPreview:
    """``CDP.privacy_preview``: a read-only look at a privacy request's subject."""

    def __init__(self, store: Store, settings: Settings, profiles: Profiles) -> None:
        self.store = store
        self.settings = settings
        self.profiles = profiles

    def preview(self, identifiers: object) -> dict[str, Any]:
        """``identifiers`` as a request takes them (``[{"type", "value"}]``; InvalidInput naming the item at
        fault). Returns ``{"given", "unmatched", "profiles": [{"id", "name", "merged_ids", "identifiers",
        "identifier_count", "counts"}], "totals", "note"}``; ``counts`` are the rows a deletion removes per kind
        (events, CRM records, identifiers, segment memberships)."""
        given = subject.parse_identifiers(identifiers, self.settings.default_phone_region)
        conn = self.store.reader()
        work, found = subject.find(conn, given, None)
        matched = {
            (kind, value)
            for kind, value in given
            if conn.execute("SELECT 1 FROM identifiers WHERE type = ? AND value = ?", (kind, value)).fetchone()
        }
        owner: dict[str, str] = work["owner"]
        profiles: list[dict[str, Any]] = []
        for live in work["live"]:
            ids = [pid for pid, root in owner.items() if root == live]
            traits = self.profiles.get(live)["traits"]
            idents = [
                {"type": str(kind), "value": str(value)}
                for _, kind, value in (
                    r for part in chunked(ids) for r in conn.execute(
                        f"SELECT id, type, value FROM identifiers WHERE profile_id IN ({marks(part)}) ORDER BY id",
                        part,
                    )
                )
            ]  # fmt: skip
            profiles.append(
                {
                    "id": live,
                    "name": _name(traits),
                    "merged_ids": [pid for pid in ids if pid != live],
                    "identifiers": idents[:SHOWN_IDENTIFIERS],
                    "identifier_count": len(idents),
                    "counts": {
                        "events": _count(conn, "events", ids),
                        "records": _count(conn, "source_records", ids),
                        "identifiers": len(idents),
                        "memberships": _count(conn, "memberships", ids),
                    },
                }
            )
        totals = {k: sum(p["counts"][k] for p in profiles) for k in ("events", "records", "identifiers", "memberships")}
        return {
            "given": [{"type": k, "value": v} for k, v in given],
            "unmatched": [{"type": k, "value": v} for k, v in given if (k, v) not in matched],
            "profiles": profiles,
            "totals": totals,
            "note": found.get("note"),
        }


def _name(traits: dict[str, Any]) -> str:
    name = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    return name or str(traits.get("name") or traits.get("email") or "")


def _count(conn: Any, table: str, profile_ids: list[str]) -> int:
    total = 0
    for part in chunked(profile_ids):
        total += int(
            conn.execute(f"SELECT count(*) FROM {table} WHERE profile_id IN ({marks(part)})", part).fetchone()[0]
        )
    return total
