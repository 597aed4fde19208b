"""Real-time re-evaluation: after events or traits are stored for a profile, the segments whose rules
mention that event name or a trait are re-evaluated for that profile only, debounced and off the
request path. Window expiries (someone ageing out of "last 30 days") are left to scheduled runs.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections import defaultdict
from typing import Any

from cdp.debounce import Debouncer
from cdp.hooks import Hook
from cdp.ingest.rows import EventRow
from cdp.privacy import consent
from cdp.segments import rules
from cdp.segments.service import Segments
from cdp.timeutil import utcnow

log = logging.getLogger("cdp.segments")
TRAITS = "\0traits"  # marker: the profile's traits changed
CONSENT = "\0consent"  # marker: the message stated consent (context.consent.categoryPreferences)


class RealtimeSegments:
    def __init__(self, segments: Segments, delay: float = 0.5, max_wait: float = 2.0) -> None:
        self.segments = segments
        self._debouncer = Debouncer("cdp-segments-realtime", self._flush, delay, max_wait)
        self._reasons: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        # After the queued profiles' traits were refreshed, before segments are re-evaluated: the profiles whose
        # traits changed (personas are predicted here, so rules on ``persona`` see them).
        self.traits_refreshed: Hook[[list[str]]] = Hook("traits_refreshed")

    def start(self) -> None:
        self._debouncer.start()

    def stop(self) -> None:
        self._debouncer.stop()

    # Hooks, called inside ingest transactions: only queue work here.
    def on_events(self, rows: list[EventRow]) -> None:
        with self._lock:
            for row in rows:
                profile = row.profile_id
                if profile is None:
                    continue
                if row.event:
                    self._reasons[profile].add(row.event)
                if row.type == "identify" or row.traits:
                    self._reasons[profile].add(TRAITS)
                if row.context and '"consent"' in row.context:
                    self._reasons[profile].add(CONSENT)
        self._debouncer.poke()

    def on_records(self, conn: sqlite3.Connection, record_ids: list[int]) -> None:
        marks = ",".join("?" * len(record_ids))
        found = conn.execute(f"SELECT DISTINCT profile_id FROM source_records WHERE id IN ({marks})", record_ids)
        with self._lock:
            for (profile,) in found:
                if profile:
                    self._reasons[profile].add(TRAITS)
        self._debouncer.poke()

    def recheck(self, profiles: dict[str, set[str]]) -> list[Any]:
        """Re-evaluate these profiles now (profile id -> the event names it holds; its traits too): a manual
        merge or split moved their events, records and traits."""
        with self._lock:
            for profile, events in profiles.items():
                self._reasons[profile] |= {*events, TRAITS}
        return self._flush()

    def drain(self) -> list[Any]:
        """Evaluate what is queued now (tests and shutdown)."""
        return self._flush()

    def _flush(self) -> list[Any]:
        with self._lock:
            reasons, self._reasons = self._reasons, defaultdict(set)
        if not reasons:
            return []
        all_rules = self.segments.rules_by_key()
        refresh = self.segments.refresh_traits
        if refresh is not None:
            refresh()
        self.traits_refreshed.call_each(log, sorted(pid for pid, why in reasons.items() if TRAITS in why))
        results = []
        changed: dict[str, set[str]] = defaultdict(set)  # segment -> profiles whose membership was re-checked
        try:  # clusters and propensity scores first: rules may use them (in_segment, propensity_<key>)
            for key, profiles in self.segments.ml.realtime(sorted(reasons)).items():
                changed[key] |= profiles
        except Exception:
            log.exception("real-time assignment to machine-learned segments failed")
        for key in rules.evaluation_order(all_rules):
            rule = all_rules.get(key)
            if rule is None:
                continue
            mention = rules.mentions(rule)
            profiles = {
                pid
                for pid, why in reasons.items()
                if (why & mention.events)
                or (TRAITS in why and mention.traits)
                or (why and any(t.startswith("propensity_") for t in mention.trait_keys()))
                or any(pid in changed[s] for s in mention.segments)
            }
            stated = {pid for pid, why in reasons.items() if CONSENT in why or TRAITS in why}
            if stated and consent.required(self.segments.require(key)):
                profiles |= stated  # consent given or withdrawn: segments that require it check again
            if not profiles:
                continue
            scope = sorted(profiles)
            engine = self.segments.engine
            result = engine.run_one(
                self.segments.require(key),
                functools.partial(engine.members_python, rule, scope, utcnow()),
                trigger="realtime",
                scope=scope,
            )
            if result.entered or result.exited:
                changed[key] |= profiles
            results.append(result)
        return results
