"""Segment HTTP Tracking API messages: validate, normalise, correct clocks; then hand the rows to a writer.

Validation and normalisation run on the caller's thread (``prepare_*``) and make ``EventRow``s
(``cdp.ingest.rows``); the rows then go to a writer (``Tracking.writer``, see ``cdp.ingest.storage``: this
process's store writer thread, or under ``cdp serve`` the ingest writer process), which drops messageIds
already stored, links identities, inserts the rest and adds the data-quality counters in one transaction.
The call returns after COMMIT; then the followers of ``events_stored`` get the stored rows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from cdp import normalize
from cdp.errors import CDPError, InvalidBatch, InvalidMessage, Unauthorized
from cdp.hooks import Hook
from cdp.identity.graph import IdentityGraph, ObservationTuple
from cdp.identity.observations import from_message
from cdp.ingest.rows import INSERT_EVENT, Batch, EventRow, Stored
from cdp.ingest.storage import BatchWriter, make_writer, store_batch, store_batches
from cdp.jsonlimits import MESSAGE_MAX_DEPTH
from cdp.keys import KeyInfo, Keys
from cdp.quality import Tally
from cdp.settings import Settings
from cdp.store import Store
from cdp.timeutil import format_ts, parse_ts, utcnow

TYPES = ("track", "identify", "page", "screen", "group", "alias")
_KNOWN = frozenset(
    {
        "type",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "receivedAt",
        "userId",
        "anonymousId",
        "event",
        "name",
        "properties",
        "traits",
        "context",
        "integrations",
        "groupId",
        "previousId",
        "writeKey",
    }
)
_LATE = timedelta(hours=24)
log = logging.getLogger("cdp.ingest")

# Where these lived before the write half moved to cdp.ingest.storage (kept importable from here).
__all__ = [
    "INSERT_EVENT",
    "TYPES",
    "Batch",
    "IngestResult",
    "Pending",
    "Stored",
    "Tracking",
    "store_batch",
    "store_batches",
]


class _Reject(Exception):
    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


@dataclass
class Pending:
    """A validated request: its result so far and the rows to write (None: nothing to write)."""

    result: IngestResult
    work: Batch | None
    single: bool  # one message (/v1/track, ...) rather than a batch: errors are InvalidMessage


@dataclass
class IngestResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": self.errors,
        }


def _identifier(msg: dict[str, Any], key: str) -> str | None:
    value = msg.get(key)
    if value is None:
        return None
    if type(value) is str:  # the usual case, checked first
        text = value.strip()
        if len(text) > 1024:
            raise _Reject(key, f"{key} is longer than 1024 characters")
        return text or None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Reject(key, f"{key} must be a string, not {type(value).__name__}")
    text = str(value).strip()
    if len(text) > 1024:
        raise _Reject(key, f"{key} is longer than 1024 characters")
    return text or None


def _object(msg: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Reject(key, f"{key} must be a JSON object, not {type(value).__name__}")
    return value


def _dumps(value: dict[str, Any] | None) -> str | None:
    return orjson.dumps(value).decode() if value else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS: dict[int, str] = {}  # whole seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS."
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]


def _iso(value: datetime) -> str:
    """``format_ts`` for the aware UTC datetimes of this module, at a fraction of its cost.

    ``datetime.isoformat`` goes through a printf-style formatter and the UTC offset (~15,000
    instructions, two calls per event); the events of a batch fall within a few seconds, so the
    text of each second is kept and only the milliseconds are appended.
    """
    if value.tzinfo is not UTC:
        return format_ts(value)
    delta = value - _EPOCH
    second = delta.days * 86_400 + delta.seconds
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[second] = value.isoformat()[:19] + "."
    return prefix + _MILLIS[value.microsecond // 1000]


class Tracking:
    def __init__(self, store: Store, keys: Keys, settings: Settings, identity: IdentityGraph) -> None:
        self.store = store
        self.keys = keys
        self.settings = settings
        self.identity = identity
        # Where validated rows are stored: this process's writer thread, or the ingest writer process.
        self.writer: BatchWriter = make_writer(store, settings, identity)
        # After events are committed: the stored rows, each with its profile id appended. A follower's error
        # is logged (the rows are committed; a follower must not fail the request).
        self.events_stored: Hook[[list[EventRow]]] = Hook("events_stored")

    # -- entry points ----------------------------------------------------------------------------

    def message(self, kind: str, msg: dict[str, Any], *, write_key: str | None = None) -> IngestResult:
        """One message from ``/v1/<kind>``; raises InvalidMessage when it is refused."""
        return self.commit(self.prepare_message(kind, msg, write_key=write_key))

    def batch(self, payload: dict[str, Any], *, write_key: str | None = None) -> IngestResult:
        """A ``/v1/batch`` body; raises InvalidBatch (after storing the good ones) if any was refused."""
        return self.commit(self.prepare_batch(payload, write_key=write_key))

    def commit(self, pending: Pending) -> IngestResult:
        """Write what ``prepare_*`` validated and finish it."""
        return self.finish(pending, self.writer.write(pending.work) if pending.work is not None else None)

    async def commit_async(self, pending: Pending) -> IngestResult:
        """``commit`` for the event loop."""
        return self.finish(pending, await self.writer.write_async(pending.work) if pending.work is not None else None)

    # -- the two halves: validation, then writing ------------------------------------------------

    def prepare_message(self, kind: str, msg: dict[str, Any], *, write_key: str | None = None) -> Pending:
        if kind not in TYPES:
            raise InvalidMessage(f"unknown message type {kind!r}; use one of {', '.join(TYPES)}")
        _check_key_type(msg.get("writeKey"))
        key = self.keys.verify(write_key or _secret(msg.get("writeKey")), "write")
        return self._validate([{**msg, "type": kind}], key, batch=None)

    def prepare_batch(self, payload: dict[str, Any], *, write_key: str | None = None) -> Pending:
        items = payload.get("batch")
        _check_key_type(payload.get("writeKey"))
        secret = write_key or _secret(payload.get("writeKey"))
        key = self.keys.verify(secret, "write") if secret else None
        if key is None and not (
            isinstance(items, list) and any(isinstance(m, dict) and m.get("writeKey") for m in items)
        ):
            self.keys.verify(None, "write")  # no key anywhere: 401 (with the hint) before the body is judged
        if not isinstance(items, list):
            raise InvalidMessage(
                "a batch body needs a `batch` array of messages",
                {"field": "batch", "reason": "missing_field"},
            )
        if len(items) > self.settings.max_batch_events:
            raise InvalidMessage(
                f"a batch holds at most {self.settings.max_batch_events} messages, this one has {len(items)}",
                {"field": "batch", "reason": "too_many_messages", "limit": self.settings.max_batch_events},
            )
        return self._validate(items, key, batch=payload)

    def finish(self, pending: Pending, stored: Stored | None) -> IngestResult:
        """After the write: counts, the hooks on stored events, and the error for refused messages."""
        result = pending.result
        if stored is not None and pending.work is not None:
            rows = pending.work[0]
            result.stored, result.duplicates, fresh, profiles = stored
            if fresh and self.events_stored:
                kept = [rows[i].stored(profile) for i, profile in zip(fresh, profiles, strict=True)]
                self.events_stored.call_each(log, kept)
        if result.errors:
            if pending.single:
                error = result.errors[0]
                if error["code"] == "unauthorized":  # the message's own writeKey is unknown or revoked
                    raise Unauthorized(error["message"], {"field": error["field"]})
                raise InvalidMessage(error["message"], {"field": error["field"], "reason": error["code"]})
            raise InvalidBatch(
                f"{result.rejected} of {result.received} messages were rejected and "
                f"{result.stored + result.duplicates} accepted; first: "
                f"[{result.errors[0]['index']}] {result.errors[0]['message']}",
                {"accepted": result.stored + result.duplicates, **result.to_dict()},
            )
        return result

    # -- the work --------------------------------------------------------------------------------

    def _validate(self, items: Sequence[Any], key: KeyInfo | None, batch: dict[str, Any] | None) -> Pending:
        received_dt = utcnow()
        received_at = format_ts(received_dt)
        batch_context = batch.get("context") if batch else None
        batch_integrations = batch.get("integrations") if batch else None
        batch_sent_raw = batch.get("sentAt") if batch else None
        batch_sent_dt = parse_ts(batch_sent_raw)
        # parsed and formatted once for every message
        batch_sent = (batch_sent_dt, batch_sent_raw, _iso(batch_sent_dt) if batch_sent_dt else None)
        if not isinstance(batch_context, dict):
            batch_context = None
        if not isinstance(batch_integrations, dict):
            batch_integrations = None

        tally = Tally()
        result = IngestResult(received=len(items))
        rows: list[EventRow] = []
        observations: list[ObservationTuple] = []
        names: list[tuple[str, str]] = []
        for index, msg in enumerate(items):
            source = key.name if key else "(unknown)"
            try:
                if not isinstance(msg, dict):
                    raise _Reject("", f"each message must be a JSON object, not {type(msg).__name__}")
                own = msg.get("writeKey")
                if own is not None and not isinstance(own, str):
                    raise _Reject("writeKey", f"writeKey must be a string, not {type(own).__name__}")
                msg_key = self._message_key(own) if own else key
                source = msg_key.name if msg_key else source
                if msg_key is None:
                    raise _Reject("writeKey", "no write key for this message", "unauthorized")
                if batch_context or batch_integrations:
                    msg = dict(msg)
                    if batch_context:
                        msg["context"] = {**batch_context, **(_object(msg, "context") or {})}
                    if batch_integrations:
                        msg["integrations"] = {**batch_integrations, **(_object(msg, "integrations") or {})}
                row, observation = self._row(msg, msg_key, received_dt, received_at, batch_sent, tally)
            except _Reject as reject:
                name = _name_of(msg)
                tally.add("events", source, name, "received")
                tally.add("events", source, name, "rejected")
                if reject.code == "missing_field":
                    tally.add("events", source, name, f"missing:{reject.field}")
                result.errors.append(
                    {"index": index, "field": reject.field, "code": reject.code, "message": reject.message}
                )
                continue
            rows.append(row)
            observations.append(observation)
            name = row.name
            names.append((row.source, name))
            tally.add("events", row.source, name, "received")
            tally.add("events", row.source, name, "stored")

        work: Batch | None = (rows, observations, names, tally) if rows or tally else None
        return Pending(result, work, single=batch is None)

    def _message_key(self, secret: object) -> KeyInfo:
        try:
            return self.keys.verify(_secret(secret), "write")
        except CDPError as exc:
            raise _Reject("writeKey", f"writeKey: {exc.message}", "unauthorized") from exc

    def _row(
        self,
        msg: dict[str, Any],
        key: KeyInfo,
        received_dt: datetime,
        received_at: str,
        batch_sent: tuple[datetime | None, object, str | None],
        tally: Tally,
    ) -> tuple[EventRow, ObservationTuple]:
        kind = msg.get("type")
        if kind not in TYPES:
            if kind is None:
                raise _Reject("type", f"type is missing; use one of {', '.join(TYPES)}", "missing_field")
            raise _Reject("type", f"type {kind!r} is not one of {', '.join(TYPES)}")
        try:
            size = len(orjson.dumps(msg))
        except orjson.JSONEncodeError as exc:  # its only cause here: nesting beyond the writer's limit
            raise _Reject(
                "", f"message nests objects and arrays deeper than {MESSAGE_MAX_DEPTH} levels", "nesting_too_deep"
            ) from exc
        if size > self.settings.max_message_bytes:
            raise _Reject(
                "",
                f"message is larger than {self.settings.max_message_bytes // 1024} KB",
                "message_too_large",
            )
        user_id = _identifier(msg, "userId")
        anonymous_id = _identifier(msg, "anonymousId")
        if user_id is None and anonymous_id is None:
            raise _Reject("userId", "userId or anonymousId is required", "missing_field")
        event = None
        group_id = previous_id = None
        if kind == "track":
            event = msg.get("event")
            if not isinstance(event, str) or not event.strip():
                raise _Reject("event", "track needs `event`, the name of the action", "missing_field")
            event = event.strip()
        elif kind in ("page", "screen"):
            name = msg.get("name")
            event = name.strip() or None if isinstance(name, str) else None
        elif kind == "alias":
            previous_id = _identifier(msg, "previousId")
            if previous_id is None:
                raise _Reject("previousId", "alias needs `previousId`", "missing_field")
            if user_id is None:
                raise _Reject("userId", "alias needs `userId`", "missing_field")
        elif kind == "group":
            group_id = _identifier(msg, "groupId")
            if group_id is None:
                raise _Reject("groupId", "group needs `groupId`", "missing_field")
        properties = _object(msg, "properties")
        traits = _object(msg, "traits")
        context = _object(msg, "context")
        integrations = _object(msg, "integrations")
        message_id = _identifier(msg, "messageId") or str(uuid.uuid4())

        flags: list[str] = []
        name_for_tally = event if kind == "track" else kind
        if traits:
            traits = self._clean_traits(traits, "traits", flags)
        if context and isinstance(context.get("traits"), dict):
            context = {**context, "traits": self._clean_traits(context["traits"], "context.traits", flags)}
        if properties and "revenue" in properties:
            properties = _clean_revenue(properties, flags)

        # Clocks: timestamp = receivedAt - (sentAt - originalTimestamp)
        original_raw = msg.get("originalTimestamp", msg.get("timestamp"))
        sent_raw = msg.get("sentAt")
        if sent_raw is None:
            sent, sent_raw, sent_at = batch_sent
        else:
            sent = parse_ts(sent_raw)
            sent_at = _iso(sent) if sent else None
        original = parse_ts(original_raw)
        if original is None and original_raw not in (None, ""):
            flags.append("invalid:timestamp")
        if sent is None and sent_raw not in (None, ""):
            flags.append("invalid:sentAt")
        if original is not None and sent is not None:
            try:
                timestamp = received_dt - (sent - original)
            except OverflowError:  # clocks thousands of years apart: no correction, the device's time kept
                flags.append("invalid:sentAt")
                timestamp = original
        else:
            timestamp = original or received_dt
        if sent is not None:
            skew = abs((sent - received_dt).total_seconds())
            if skew > self.settings.clock_skew_report_seconds:
                tally.add("events", key.name, name_for_tally or kind, "skewed")
            tally.maximum("events", key.name, name_for_tally or kind, "max_skew_seconds", skew)
        if received_dt - timestamp > _LATE:
            tally.add("events", key.name, name_for_tally or kind, "late")
        for flag in flags:
            tally.add("events", key.name, name_for_tally or kind, flag)

        extra = None if _KNOWN.issuperset(msg) else {k: v for k, v in msg.items() if k not in _KNOWN}
        observation = from_message(
            {"traits": traits, "context": context},
            user_id,
            anonymous_id,
            previous_id,
            f"event:{message_id}",
            received_at,
        ).as_tuple()
        row = EventRow(
            message_id,
            kind,
            event,
            user_id,
            anonymous_id,
            group_id,
            previous_id,
            _iso(timestamp),
            _iso(original) if original else None,
            sent_at,
            received_at,
            _dumps(properties),
            _dumps(traits),
            _dumps(context),
            _dumps(integrations),
            _dumps(extra),
            key.name,
            key.id,
            orjson.dumps(flags).decode() if flags else None,
        )
        return row, observation

    def _clean_traits(self, traits: dict[str, Any], where: str, flags: list[str]) -> dict[str, Any]:
        """Canonical identity traits normalised; an unusable value becomes null and is flagged."""
        if not ("email" in traits or "phone" in traits or "birthday" in traits):
            return traits
        traits = dict(traits)
        for field_name, fn in (
            ("email", normalize.email),
            ("phone", lambda v: normalize.phone(v, self.settings.default_phone_region)),
            ("birthday", lambda v: normalize.date_iso(v, self.settings.date_order)),
        ):
            if field_name in traits and not normalize.is_blank(traits[field_name]):
                value = fn(traits[field_name])
                if value is None:
                    flags.append(f"invalid:{where}.{field_name}")
                traits[field_name] = value
        return traits


def _clean_revenue(properties: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    value = properties.get("revenue")
    if value is None:
        return properties
    number: float | None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            number = None
    if number is not None and number >= 0 and number == number:  # not NaN
        return properties if isinstance(value, int | float) else {**properties, "revenue": number}
    flags.append("invalid:properties.revenue")
    return {**properties, "revenue": None}


def _name_of(msg: object) -> str:
    if isinstance(msg, dict):
        if msg.get("type") == "track" and isinstance(msg.get("event"), str):
            return str(msg["event"])
        if isinstance(msg.get("type"), str) and msg["type"] in TYPES:
            return str(msg["type"])
    return "(invalid)"


def _check_key_type(value: object) -> None:
    """A ``writeKey`` in a body is a string (or null): anything else is refused, not ignored."""
    if value is not None and not isinstance(value, str):
        raise InvalidMessage(
            f"writeKey must be a string, not {type(value).__name__}", {"field": "writeKey", "reason": "invalid_type"}
        )


def _secret(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
