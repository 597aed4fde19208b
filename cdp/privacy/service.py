"""Privacy requests: durable, resumable, idempotent (``cdp.privacy`` on the facade).

A request is a row in ``privacy_requests`` before it is acknowledged (202). A worker thread (or the CLI, in the
foreground) runs it step by step on a connection of its own; each step commits with the request's progress, so
a crash resumes it from the last committed step (``resume``, run by the server at start and by
``cdp privacy resume``) and running a step again changes nothing. When a request ends, its ``work`` (the
identifier values it needed) is cleared: what stays is the type, the salted hashes, the counts, the times and
the key that asked.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from cdp.errors import ExportExpired, ExportNotReady, InvalidInput, UnknownPrivacyRequest
from cdp.identity.traits import profile_sources
from cdp.pagination import Page, check_limit, decode_cursor, encode_cursor
from cdp.privacy import consent, erase, export, subject, suppression
from cdp.privacy.hashing import identifier_hash, salt
from cdp.profiles import Profiles
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import format_ts, now_iso, parse_ts, utcnow

log = logging.getLogger("cdp.privacy")
TYPES = ("delete", "suppress", "suppress_with_delete", "unsuppress", "export")
STATUSES = ("pending", "running", "done", "failed")
SUPPRESSIBLE = ("user_id", "email", "phone", "anonymous_id", "record")


def _connect(path: Path, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")  # deleted content is overwritten with zeros, not left in free space
    return conn


class Privacy:
    """Delete, suppress, unsuppress and export a person; consent per profile."""

    def __init__(self, store: Store, settings: Settings, profiles: Profiles) -> None:
        self.store = store
        self.settings = settings
        self.profiles = profiles
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one request runs at a time in this process

    # -- requests ------------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        identifiers: object = None,
        profile_id: object = None,
        *,
        requested_by: str | None = None,
        background: bool = True,
    ) -> dict[str, Any]:
        """Record a request (durably) and start it: in the worker thread, or here when ``background`` is false
        (then it returns once the request ended)."""
        if kind not in TYPES:
            raise InvalidInput(
                f"type is {kind!r}; it must be one of {', '.join(TYPES)}", {"field": "type", "allowed": list(TYPES)}
            )
        if (identifiers is None) == (profile_id is None):
            raise InvalidInput(
                'give either identifiers ([{"type", "value"}]) or a profile_id, not both',
                {"field": "identifiers" if identifiers is not None else "profile_id"},
            )
        given = (
            subject.parse_identifiers(identifiers, self.settings.default_phone_region)
            if identifiers is not None
            else []
        )
        if profile_id is not None and (not isinstance(profile_id, str) or not profile_id.strip()):
            raise InvalidInput("profile_id must be a non-empty string", {"field": "profile_id"})
        if kind == "unsuppress" and profile_id is not None:
            raise InvalidInput(
                "unsuppress takes the identifiers that were suppressed (the profile may no longer exist)",
                {"field": "profile_id"},
            )

        def job(conn: sqlite3.Connection) -> str:
            key = salt(conn)
            hashed = [{"type": t, "hash": identifier_hash(key, t, v)} for t, v in given]
            if profile_id is not None:
                hashed.append({"type": "profile_id", "hash": identifier_hash(key, "profile_id", str(profile_id))})
            subject_json = orjson.dumps(hashed).decode()
            # The same request again while one is open (a retried POST): the open one answers for both.
            open_one = conn.execute(
                "SELECT id FROM privacy_requests WHERE status IN ('pending', 'running') AND type = ? AND subject = ?",
                (kind, subject_json),
            ).fetchone()
            if open_one is not None:
                return str(open_one[0])
            request_id = "prq_" + secrets.token_hex(10)
            work = {"given": [list(i) for i in given], "profile_id": profile_id}
            conn.execute(
                "INSERT INTO privacy_requests (id, type, status, subject, work, requested_by, created_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                (request_id, kind, subject_json, orjson.dumps(work).decode(), requested_by, now_iso()),
            )
            return request_id

        request_id = self.store.write(job)
        if background:
            self._ensure_worker()
            self._wake.set()
            return self.get(request_id)
        return self.run(request_id)

    def get(self, request_id: str) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM privacy_requests WHERE id = ?", (request_id,))
        if not rows:
            raise UnknownPrivacyRequest.of(request_id)
        return self._view(rows[0])

    def list_requests(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Page[dict[str, Any]]:
        limit = check_limit(limit)
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", {"field": "status"})
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        position = decode_cursor(cursor)
        if position is not None:
            where.append("(created_at, id) < (?, ?)")
            params += [position.get("c"), position.get("i")]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        rows = self.store.query(
            f"SELECT * FROM privacy_requests WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit + 1],
        )
        more = len(rows) > limit
        rows = rows[:limit]
        following = encode_cursor({"c": rows[-1]["created_at"], "i": rows[-1]["id"]}) if more else None
        return Page([self._view(r) for r in rows], following)

    def _view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = {
            "id": row["id"],
            "type": row["type"],
            "status": row["status"],
            "subject": orjson.loads(row["subject"]),
            "found": orjson.loads(row["found"]),
            "counts": orjson.loads(row["counts"]),
            "requested_by": row["requested_by"],
            "error": row["error"],
            "created_at": row["created_at"],
            "started_at": row["started_at"],
            "finished_at": row["finished_at"],
        }
        if row["type"] == "export":
            available = bool(row["export_path"]) and row["status"] == "done"
            out["download"] = {
                "available": available,
                "url": f"/v1/privacy/requests/{row['id']}/download" if available else None,
                "expires_at": row["expires_at"],
            }
        return out

    # -- running -------------------------------------------------------------------------------------

    def resume(self) -> list[str]:
        """Run every pending or interrupted request to its end (oldest first); their ids."""
        ids = [
            r["id"]
            for r in self.store.query(
                "SELECT id FROM privacy_requests WHERE status IN ('pending', 'running') ORDER BY created_at, id"
            )
        ]
        for request_id in ids:
            self.run(request_id)
        self.expire_exports()
        return ids

    def run(self, request_id: str) -> dict[str, Any]:
        """Run (or resume) one request to its end; a request that already ended is left as it is."""
        with self._lock:
            conn = _connect(self.store.path, int(self.settings.busy_timeout_ms))
            try:
                self._load(conn, request_id)  # an unknown id is the caller's error, not the request's
                self._run(conn, request_id)
            except UnknownPrivacyRequest:
                raise
            except Exception as exc:
                log.exception("privacy request %s failed", request_id)
                self._fail(conn, request_id, f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
        return self.get(request_id)

    def _fail(self, conn: sqlite3.Connection, request_id: str, error: str) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE privacy_requests SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
            (error, now_iso(), request_id),
        )
        conn.execute("COMMIT")

    def _load(self, conn: sqlite3.Connection, request_id: str) -> sqlite3.Row:
        conn.row_factory = sqlite3.Row
        row: sqlite3.Row | None = conn.execute("SELECT * FROM privacy_requests WHERE id = ?", (request_id,)).fetchone()
        conn.row_factory = None
        if row is None:
            raise UnknownPrivacyRequest.of(request_id)
        return row

    def _save(self, conn: sqlite3.Connection, request_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [orjson.dumps(v).decode() if isinstance(v, dict | list) else v for v in fields.values()]
        conn.execute(f"UPDATE privacy_requests SET {sets} WHERE id = ?", [*values, request_id])

    def _run(self, conn: sqlite3.Connection, request_id: str) -> None:
        """Step by step, each step in its own transaction that re-reads the request under the write lock: two
        processes resuming one request never do a step twice."""
        erased = False
        while True:
            row = self._load(conn, request_id)
            if row["status"] in ("done", "failed"):
                break
            if row["step"] == "export":
                self._export(conn, row)
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._load(conn, request_id)
                if row["status"] not in ("done", "failed") and row["step"] != "export":
                    erased |= self._step(conn, row)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if row["step"] == "events" and self.settings.privacy_chunk_pause_seconds:
                time.sleep(self.settings.privacy_chunk_pause_seconds)
        if erased:
            truncated = self._truncate_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            counts = orjson.loads(self._load(conn, request_id)["counts"])
            self._save(conn, request_id, counts={**counts, "wal_truncated": int(truncated)})
            conn.execute("COMMIT")
            self._truncate_wal(conn)

    def _step(self, conn: sqlite3.Connection, row: sqlite3.Row) -> bool:
        """One step of a request, in the caller's transaction; True when it was the final erasure step."""
        request_id, kind, step = row["id"], row["type"], row["step"]
        work = orjson.loads(row["work"] or "{}")
        counts: dict[str, int] = orjson.loads(row["counts"])
        if step is None:  # who the request is about; suppression first, so nothing new arrives meanwhile
            given: list[tuple[str, str]] = [(i[0], i[1]) for i in work["given"]]
            found_work, found = subject.find(conn, given, work.get("profile_id"))
            work.update(found_work)
            if work.get("profile_id") is not None and not work["live"]:
                found["note"] = "no profile has this id"
            if kind in ("suppress", "suppress_with_delete"):
                counts["suppressed_identifiers"] = self._suppress(conn, request_id, given, work["identifiers"])
            elif kind == "unsuppress":
                counts["unsuppressed_identifiers"] = self._unsuppress(conn, given)
            following = {"delete": "events", "suppress_with_delete": "events", "export": "export"}.get(kind)
            if following is None:
                self._finish(conn, request_id, counts, found=found, started_at=now_iso())
                return False
            self._save(
                conn, request_id, status="running", started_at=now_iso(), work=work, found=found, counts=counts,
                step=following,
            )  # fmt: skip
            return False
        if step == "events":  # a chunk at a time: ingest keeps going between chunks
            removed = erase.delete_events_chunk(conn, work["profiles"], self.settings.privacy_events_chunk)
            counts["events"] = counts.get("events", 0) + removed
            self._save(conn, request_id, counts=counts, step="events" if removed else "rest")
            return False
        if step == "rest":
            counts.update({k: counts.get(k, 0) + v for k, v in erase.delete_rest(conn, work, request_id).items()})
            self._finish(conn, request_id, counts)
            return True
        raise ValueError(f"privacy request {request_id} is at an unknown step {step!r}")

    def _export(self, conn: sqlite3.Connection, row: sqlite3.Row) -> None:
        """Write the export file from one consistent snapshot, then end the request (if nobody else did)."""
        request_id = row["id"]
        work = orjson.loads(row["work"])
        counts: dict[str, int] = orjson.loads(row["counts"])
        path = self._export_path(request_id)
        conn.execute("BEGIN")
        try:
            summary = {"profile": [self._profile_view(conn, pid) for pid in work["live"]]}
            counts.update(export.write(conn, work, path, request_id, summary))
        finally:
            conn.execute("COMMIT")
        expires = format_ts(utcnow() + timedelta(hours=self.settings.privacy_export_ttl_hours))
        conn.execute("BEGIN IMMEDIATE")
        if self._load(conn, request_id)["status"] == "running":
            self._finish(conn, request_id, counts, export_path=str(path), expires_at=expires)
        conn.execute("COMMIT")

    def _profile_view(self, conn: sqlite3.Connection, profile_id: str) -> dict[str, Any]:
        view = self.profiles.get(profile_id)
        view["trait_sources"] = [
            {"source": s.source, "at": s.at, "values": dict(s.values)} for s in profile_sources(conn, profile_id)
        ]
        view["consent"] = consent.details(conn, profile_id)
        return view

    def _finish(self, conn: sqlite3.Connection, request_id: str, counts: dict[str, int], **extra: Any) -> None:
        """End the request: drop the values it needed (only hashes stay)."""
        self._save(conn, request_id, status="done", work=None, step=None, counts=counts, finished_at=now_iso(), **extra)

    def _suppress(
        self, conn: sqlite3.Connection, request_id: str, given: list[tuple[str, str]], held: list[list[Any]]
    ) -> int:
        key = salt(conn)
        pairs = set(given) | {(k, v) for _, k, v in held if k in SUPPRESSIBLE}
        now = now_iso()
        added = 0
        for kind, value in sorted(pairs):
            added += conn.execute(
                "INSERT OR IGNORE INTO privacy_suppressions (hash, type, request_id, created_at) VALUES (?, ?, ?, ?)",
                (identifier_hash(key, kind, value), kind, request_id, now),
            ).rowcount
        suppression.bump(conn)
        return added

    def _unsuppress(self, conn: sqlite3.Connection, given: list[tuple[str, str]]) -> int:
        """Lift the suppressions of the given identifiers and of the requests that suppressed them (a person
        suppressed by email is unsuppressed with every identifier that request suppressed)."""
        key = salt(conn)
        hashes = [identifier_hash(key, k, v) for k, v in given]
        hashes += [h for k, v in given if k == "record" and (h := suppression.legacy_record_hash(conn, key, v))]
        requests = {
            r[0]
            for h in hashes
            for r in conn.execute("SELECT request_id FROM privacy_suppressions WHERE hash = ?", (h,))
        }
        removed = erase.delete_in(conn, "privacy_suppressions", "hash", hashes)
        removed += erase.delete_in(conn, "privacy_suppressions", "request_id", sorted(requests))
        suppression.bump(conn)
        return removed

    def _truncate_wal(self, conn: sqlite3.Connection) -> bool:
        """Fold the WAL into the database and truncate it to zero bytes, so no old page copy holds deleted
        values; readers holding an old snapshot can delay it a little."""
        for _ in range(50):
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return True
            time.sleep(0.1)
        log.warning(
            "the WAL could not be truncated after a deletion (readers kept it busy); the next checkpoint does it"
        )
        return False

    # -- exports -------------------------------------------------------------------------------------

    def _export_dir(self) -> Path:
        db = Path(self.settings.db)
        return db.parent / f"{db.name}.privacy-exports"

    def _export_path(self, request_id: str) -> Path:
        return self._export_dir() / f"{request_id}.json"

    def download(self, request_id: str) -> Path:
        """The export file of a finished export request (ExportNotReady before, ExportExpired after)."""
        rows = self.store.query(
            "SELECT type, status, export_path, expires_at FROM privacy_requests WHERE id = ?", (request_id,)
        )
        if not rows:
            raise UnknownPrivacyRequest.of(request_id)
        row = rows[0]
        if row["type"] != "export":
            raise InvalidInput(
                f"request {request_id} is a {row['type']} request; only exports have a download", {"id": request_id}
            )
        if row["status"] != "done":
            raise ExportNotReady(
                f"the export is {row['status']}; try again when its status is done", {"status": row["status"]}
            )
        expires = parse_ts(row["expires_at"])
        if not row["export_path"] or (expires is not None and expires <= utcnow()):
            self.expire_exports()
            raise ExportExpired(
                f"the export expired at {row['expires_at']} and was removed; make a new export request",
                {"expired_at": row["expires_at"]},
            )
        path = Path(row["export_path"])
        if not path.exists():
            raise ExportExpired("the export file is gone; make a new export request", {"id": request_id})
        return path

    def expire_exports(self) -> int:
        """Remove the export files whose time is up; how many."""
        now = format_ts(utcnow())
        rows = self.store.query(
            "SELECT id, export_path FROM privacy_requests WHERE export_path IS NOT NULL AND expires_at <= ?", (now,)
        )
        for row in rows:
            Path(row["export_path"]).unlink(missing_ok=True)
        if rows:
            ids = [(r["id"],) for r in rows]
            self.store.write(
                lambda conn: conn.executemany("UPDATE privacy_requests SET export_path = NULL WHERE id = ?", ids)
            )
        return len(rows)

    # -- consent -------------------------------------------------------------------------------------

    def consent(self, profile_id: str) -> dict[str, Any]:
        """A profile's consent per category (with when and where it was stated) and its merge conflicts."""
        pid = self.profiles.live_id(profile_id)
        return {"profile_id": pid, **consent.details(self.store.reader(), pid)}

    # -- worker --------------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="cdp-privacy", daemon=True)
        self._thread.start()

    def start(self) -> None:
        """Resume interrupted requests and run new ones in a background thread (the server calls this)."""
        self._ensure_worker()
        self._wake.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=60)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.resume()
            except Exception:  # logged; the next wake-up tries again
                log.exception("privacy worker")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
