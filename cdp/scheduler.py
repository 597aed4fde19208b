"""In-process job scheduling (APScheduler).

Jobs never overlap with themselves (``max_instances=1``) and missed runs coalesce into one.
Domain modules register their jobs here; the server starts it unless ``--no-scheduler``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from cdp import memory
from cdp.core import CDP
from cdp.timeutil import parse_duration

log = logging.getLogger("cdp.scheduler")


def trigger(spec: dict[str, str] | str) -> IntervalTrigger | CronTrigger:
    """``"15m"`` / ``{"every": "15m"}`` or ``{"cron": "0 * * * *"}`` as an APScheduler trigger."""
    if isinstance(spec, str):
        spec = {"every": spec}
    if spec.get("cron"):
        return CronTrigger.from_crontab(spec["cron"], timezone="UTC")
    return IntervalTrigger(seconds=parse_duration(spec["every"]).total_seconds(), timezone="UTC")


class Scheduler:
    def __init__(self, cdp: CDP) -> None:
        self.cdp = cdp
        self._scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        )
        self.add("store.checkpoint", {"every": "15m"}, self._checkpoint)
        self.add("memory.release", {"every": "1m"}, lambda: None)  # on-demand runs' memory too (see add)
        self.add("identity.resolve", {"every": cdp.settings.resolve_schedule}, cdp.identity.run)
        for key, spec in cdp.segments.schedules().items():
            self.schedule_segment(key, spec)
        cdp.segments.schedule_changed.connect(self.schedule_segment)

    def schedule_segment(self, key: str, spec: dict[str, str] | None) -> None:
        """(Re)register a segment's own job; None removes it. Schedules live in the store, so they survive restarts."""
        job_id = f"segment:{key}"
        if spec is None:
            self.remove(job_id)
            return
        self.add(job_id, spec, lambda: self.cdp.segments.compute(key, trigger="schedule"))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def add(self, job_id: str, spec: dict[str, str] | str, fn: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:  # a failing job is logged and retried at its next run
                log.exception("scheduled job %s failed", job_id)
            finally:
                memory.release()  # the job's working memory back to the system (RSS stays flat run after run)

        self._scheduler.add_job(run, trigger(spec), id=job_id, name=job_id, replace_existing=True)

    def remove(self, job_id: str) -> None:
        if self._scheduler.get_job(job_id):
            self._scheduler.remove_job(job_id)

    def jobs(self) -> list[dict[str, Any]]:
        out = []
        for job in self._scheduler.get_jobs():
            next_run = getattr(job, "next_run_time", None)  # unset until the scheduler starts
            out.append({"id": job.id, "next_run": next_run.isoformat() if next_run else None})
        return out

    def start(self) -> None:
        if not self._scheduler.running:
            self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def _checkpoint(self) -> None:
        """Keep the WAL file small: fold it into the database when readers allow."""

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA optimize")

        self.cdp.store.write(job)
        self.cdp.store.reader().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
