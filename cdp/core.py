"""The library facade: ``CDP(settings)`` with one sub-API per domain."""

from __future__ import annotations

from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

from cdp.browser import BrowserSDKs
from cdp.events import Events
from cdp.identity.labels import Labels
from cdp.identity.realtime import RealtimeMatcher
from cdp.identity.resolve import Resolution
from cdp.identity.review import Review
from cdp.identity.stewardship import Stewardship
from cdp.ingest import Ingest
from cdp.keys import Keys
from cdp.lineage import Lineage
from cdp.ml.personas import Personas
from cdp.privacy.service import Privacy
from cdp.privacy_preview import PrivacyPreview
from cdp.profiles import Profiles
from cdp.quality import Quality
from cdp.quality_samples import QualitySamples
from cdp.segments.realtime import RealtimeSegments
from cdp.segments.service import Segments
from cdp.settings import Settings
from cdp.store import Store
from cdp.wiring import identity_graph

if TYPE_CHECKING:
    from cdp.webhooks import Webhooks


class CDP:
    """Everything the API and the CLI do goes through here.

    >>> cdp = CDP(Settings(db="cdp.db"))
    >>> info, secret = cdp.keys.create("write", name="website")
    >>> cdp.ingest.message("track", {"userId": "u1", "event": "Signed Up"}, write_key=secret)
    """

    def __init__(self, settings: Settings | None = None, *, migrate: bool = True) -> None:
        self.settings = settings or Settings()
        self.store = Store(self.settings)
        if migrate:
            self.store.migrate()
        self.keys = Keys(self.store, cache_seconds=self.settings.key_cache_seconds)
        self.graph = identity_graph(self.store, self.settings)
        self.browser = BrowserSDKs(self.keys)
        self.ingest = Ingest(self.store, self.keys, self.settings, self.graph)
        self.events = Events(self.store)
        self.profiles = Profiles(self.store, self.settings)
        self.lineage = Lineage(self.store, self.settings, self.profiles.live_id)
        self.identity = Resolution(self.store, self.settings, self.graph)
        self.realtime = RealtimeMatcher(self.store, self.graph, self.identity)
        self.ingest.records.records_changed.connect(self.realtime.on_records)
        self.ingest.tracking.events_stored.connect(self.realtime.on_events)
        self.segments = Segments(self.store, refresh_traits=self.identity.refresh_traits)
        self.segments_realtime = RealtimeSegments(self.segments)
        self.ingest.tracking.events_stored.connect(self.segments_realtime.on_events)
        self.ingest.records.records_changed.connect(self.segments_realtime.on_records)
        self.identity.run_succeeded.connect(self._after_resolution)
        self.quality = Quality(self.store)
        self.quality_samples = QualitySamples(self.store)
        self.stewardship = Stewardship(self.store, self.settings, self.graph)
        self.stewardship.profiles_changed.connect(self._after_stewardship)
        self.review = Review(self.store, self.stewardship)
        self.labels = Labels(self.store)
        self.personas = Personas(self.store)
        self.privacy = Privacy(self.store, self.settings, self.profiles)
        self.privacy_preview = PrivacyPreview(self.store, self.settings, self.profiles)
        self.segments_realtime.traits_refreshed.connect(self.personas.apply_to)

    @cached_property
    def webhooks(self) -> Webhooks:
        """Subscriptions and deliveries (built on first use: HTTP and crypto imports that resolution,
        imports and queries do not need)."""
        from cdp.webhooks import Webhooks

        return Webhooks(self.store, self.settings)

    def is_empty(self) -> bool:
        """True when no event or record has been stored yet."""
        conn = self.store.reader()
        return not (
            conn.execute("SELECT 1 FROM events LIMIT 1").fetchone()
            or conn.execute("SELECT 1 FROM source_records LIMIT 1").fetchone()
        )

    def _after_resolution(self, summary: dict[str, object]) -> None:
        """Segments depend on profiles: a run that changed any is followed by the segment runs (after the
        personas of profiles whose title arrived or changed)."""
        self.personas.apply()
        if summary.get("moved_identifiers"):
            self.segments.compute_many(trigger="resolution")

    def refresh_personas(self) -> int:
        """After a bulk import: bring traits up to date and predict the persona of every profile whose title
        arrived or changed (with the current model; nothing to do before the first labels)."""
        if not self.personas.active():
            return 0
        self.identity.refresh_traits()
        return self.personas.apply()

    def _after_stewardship(self, profile_ids: list[str]) -> None:
        """A manual merge, split or undo: traits of the profiles it changed, then their segment memberships."""
        conn = self.store.reader()
        events = {
            pid: {str(e) for (e,) in conn.execute(
                "SELECT DISTINCT event FROM events WHERE profile_id = ? AND event IS NOT NULL", (pid,))}
            for pid in profile_ids
        }  # fmt: skip
        self.identity.refresh_traits()
        self.segments_realtime.recheck(events)

    def identity_quality(self) -> dict[str, object]:
        """The labels' verdict on the current match threshold (see `cdp.identity.label_quality`)."""
        from cdp.identity import label_quality

        return label_quality.estimate(self.identity)

    def start_writer(self) -> None:
        """Start the ingest writer process, if tracking writes go through one (the server does this before its
        first request)."""
        self.store.shared = True
        self.ingest.start_writer()

    def start_background(self) -> None:
        """Real-time fuzzy linking and segment re-evaluation threads (the server runs them)."""
        self.realtime.start()
        self.segments_realtime.start()
        self.webhooks.start()
        self.privacy.start()

    def close(self) -> None:
        self.privacy.stop()
        self.realtime.stop()
        self.segments_realtime.stop()
        if "webhooks" in self.__dict__:
            self.webhooks.stop()
        self.ingest.close()
        self.store.close()

    def __enter__(self) -> CDP:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
