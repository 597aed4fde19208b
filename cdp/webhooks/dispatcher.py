"""The dispatcher: one background thread running an asyncio loop with one HTTP client (``http_client``).

Each *tick* is one write job, so one transaction: record the results of finished attempts, fan new
outbox rows out into deliveries, and lease the next due deliveries (per endpoint at most
``FILL * concurrency`` in flight). Requests then go out concurrently, at most
``webhooks_concurrency_per_endpoint`` at once per endpoint. A tick runs when an attempt finishes or
every ``webhooks_poll_seconds`` when there is work (new outbox rows, due deliveries); a cheap read
decides that, so an idle dispatcher never takes the write lock.

On stop, requests in flight get a few seconds to finish; those cut short have their lease released
so the next start sends them at once. After a crash, leases simply run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import defaultdict
from datetime import datetime, timedelta

from cdp.errors import SecretKeyUnavailable, StoreClosed
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import format_ts, utcnow
from cdp.webhooks import delivery_queue, sending, signing
from cdp.webhooks.delivery_queue import Claimed, Policy, Result
from cdp.webhooks.http_client import Client
from cdp.webhooks.vault import Vault

log = logging.getLogger("cdp.webhooks")
FILL = 5  # leased per endpoint, as a multiple of its concurrency
MIN_TICK_SECONDS = 0.01  # when busy, results are gathered this long into one transaction
STOP_GRACE_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 1.0
BLOCKED_RETRY_SECONDS = 2.0  # deliveries held by an undecryptable secret are tried again this often


def policy(settings: Settings) -> Policy:
    return Policy(
        schedule=tuple(settings.webhooks_retry_schedule),
        jitter=settings.webhooks_retry_jitter,
        disable_after_seconds=settings.webhooks_disable_after_seconds,
    )


def lease_seconds(settings: Settings) -> float:
    """Long enough for every leased request of an endpoint to wait its turn and time out."""
    return settings.webhooks_timeout_seconds * (FILL + 1) + 5


class Dispatcher:
    def __init__(self, store: Store, settings: Settings, vault: Vault) -> None:
        self.store = store
        self.settings = settings
        self.vault = vault
        self.policy = policy(settings)
        self.cap = FILL * settings.webhooks_concurrency_per_endpoint
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._in_flight: dict[str, set[int]] = defaultdict(set)
        self._results: list[Result] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._secrets: dict[tuple[str, str], str] = {}
        self._high_water = -1
        # Endpoints whose signing secret cannot be decrypted (key file lost, wrong CDP_SECRET_KEY): why, shown on
        # the endpoint and its pending deliveries; those are tried again every BLOCKED_RETRY_SECONDS, so a rotated
        # secret (here or from another process) is used at once.
        self.blocked: dict[str, str] = {}
        self._blocked_ids: list[int] = []

    # -- control (any thread) --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name="cdp-webhooks", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=STOP_GRACE_SECONDS + self.settings.webhooks_timeout_seconds + 10)
        self._thread = None

    def unblock(self, endpoint_id: str) -> None:
        """The endpoint's secret changed: forget the failure and the cached secrets, and look for work now."""
        self.blocked.pop(endpoint_id, None)
        for key in [k for k in self._secrets if k[0] == endpoint_id]:
            self._secrets.pop(key, None)
        self.wake()

    def wake(self) -> None:
        """Look for work now (after a replay, an endpoint enabled, ...)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started.set()
        client = sending.client()
        try:
            while not self._stopping.is_set():
                try:
                    busy = await self._tick(client)
                except StoreClosed:
                    return
                except Exception:  # e.g. the database is locked by another process: logged, tried again
                    log.exception("webhook dispatcher tick failed; trying again in %s s", ERROR_BACKOFF_SECONDS)
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                    continue
                if busy:
                    await asyncio.sleep(MIN_TICK_SECONDS)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.webhooks_poll_seconds)
                self._wake.clear()
        finally:
            await self._shutdown()
            await client.aclose()
            self._loop = None

    def _has_work(self, now: datetime) -> bool:
        conn = self.store.reader()
        top = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        if top > self._high_water:
            return True
        for eid, *_ in delivery_queue.sendable_endpoints(conn, now):
            if len(self._in_flight[eid]) < self.cap and delivery_queue.has_claimable(conn, eid, now):
                return True
        return False

    async def _tick(self, client: Client) -> bool:
        now = utcnow()
        results, self._results = self._results, []
        blocked, self._blocked_ids = self._blocked_ids, []
        if not results and not blocked and not self._has_work(now):
            return False
        retry_blocked = now + timedelta(seconds=BLOCKED_RETRY_SECONDS)
        busy = {eid: set(ids) for eid, ids in self._in_flight.items()}
        first_delay = self.policy.schedule[0]
        lease = lease_seconds(self.settings)

        def job(conn: sqlite3.Connection) -> tuple[list[Claimed], int, int]:
            delivery_queue.record(conn, results, now, self.policy)
            delivery_queue.release(conn, blocked, retry_blocked)
            consumed = delivery_queue.fan_out(conn, now, first_delay)
            return delivery_queue.claim(conn, now, lease, self.cap, busy), consumed, delivery_queue.high_water(conn)

        try:
            claimed, consumed, self._high_water = await asyncio.wrap_future(self.store.submit(job))
        except BaseException:
            self._results = results + self._results  # not recorded: keep them for the next tick
            self._blocked_ids = blocked + self._blocked_ids
            raise
        for result in results:
            self._in_flight[result.endpoint_id].discard(result.delivery_id)
        for item in claimed:
            out = self._outgoing(item)
            if out is None:
                continue
            self._in_flight[item.endpoint_id].add(item.id)
            task = asyncio.create_task(self._deliver(client, out))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return bool(results or claimed or consumed >= delivery_queue.FAN_OUT_BATCH)

    def _outgoing(self, item: Claimed) -> sending.Outgoing | None:
        try:
            keys = [self._secret(item.endpoint_id, item.secret)]
        except SecretKeyUnavailable as exc:
            if item.endpoint_id not in self.blocked:  # its deliveries wait, and are tried again shortly
                log.error("webhook %s: deliveries are held: %s", item.endpoint_id, exc.message)
            self.blocked[item.endpoint_id] = exc.message
            self._blocked_ids.append(item.id)
            return None
        self.blocked.pop(item.endpoint_id, None)
        if item.previous_secret:
            # the previous secret may be lost with the old key: then sign with the new one only
            with contextlib.suppress(SecretKeyUnavailable):
                keys.append(self._secret(item.endpoint_id, item.previous_secret))
        body = signing.body(item.type, item.created_at, item.data)
        return sending.Outgoing(item.id, item.endpoint_id, item.url, item.message_id, body, keys)

    def _secret(self, endpoint_id: str, token: str) -> str:
        key = (endpoint_id, token)
        if key not in self._secrets:
            self._secrets[key] = self.vault.decrypt(token, endpoint_id)
        return self._secrets[key]

    async def _deliver(self, client: Client, out: sending.Outgoing) -> None:
        semaphore = self._semaphores.get(out.endpoint_id)
        if semaphore is None:
            semaphore = self._semaphores[out.endpoint_id] = asyncio.Semaphore(
                self.settings.webhooks_concurrency_per_endpoint
            )
        async with semaphore:
            try:
                result = await sending.send(
                    client,
                    out,
                    timeout=self.settings.webhooks_timeout_seconds,
                    allow_private=self.settings.webhooks_allow_private_urls,
                )
            except Exception as exc:  # a bug here must not strand the delivery: record it as a failed attempt
                log.exception("webhook delivery %s failed unexpectedly", out.message_id)
                result = Result(out.delivery_id, out.endpoint_id, format_ts(utcnow()), error=f"internal: {exc!r}")
        self._results.append(result)
        if self._wake is not None:
            self._wake.set()

    async def _shutdown(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        results, self._results = self._results, []
        done = {r.delivery_id for r in results}
        cut_short = [did for ids in self._in_flight.values() for did in ids if did not in done]
        self._in_flight.clear()
        if not results and not cut_short:
            return
        now = utcnow()

        def job(conn: sqlite3.Connection) -> None:
            delivery_queue.record(conn, results, now, self.policy)
            delivery_queue.release(conn, cut_short, now)

        try:
            await asyncio.wrap_future(self.store.submit(job))
        except StoreClosed:
            log.warning("store closed before %d webhook results were saved; they will be sent again", len(results))
