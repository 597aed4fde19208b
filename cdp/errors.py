"""Errors named after the situation, all under one ``CDPError``.

Each carries a snake_case ``code``, a message that says what is wrong and how to fix it, and
``details``; the API maps ``status`` to HTTP once, in its exception handlers.
"""

from __future__ import annotations

from typing import Any


class CDPError(Exception):
    code = "cdp_error"
    status = 400

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(CDPError):
    code = "invalid_input"


class InvalidJSON(InvalidInput):
    code = "invalid_json"


class InvalidMessage(InvalidInput):
    code = "invalid_message"


class InvalidBatch(InvalidInput):
    """Some messages of a batch were refused; the others were stored."""

    code = "invalid_messages"


class MissingColumns(InvalidInput):
    """An import names a column (``--id-column``, a ``--map`` source) that the file does not have."""

    code = "missing_columns"


class InvalidRecords(InvalidInput):
    """Some CRM records were refused; the others were stored."""

    code = "invalid_records"


class PayloadTooLarge(CDPError):
    code = "payload_too_large"
    status = 413


class Unauthorized(CDPError):
    code = "unauthorized"
    status = 401


class Forbidden(CDPError):
    code = "forbidden"
    status = 403


class NotFound(CDPError):
    code = "not_found"
    status = 404


class UnknownKey(NotFound):
    code = "unknown_key"


class UnknownWriteKey(NotFound):
    """A browser SDK asked for the settings of a write key that does not exist or was revoked."""

    code = "unknown_write_key"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class MigrationFailed(CDPError):
    code = "migration_failed"
    status = 500


class MigrationEdited(MigrationFailed):
    """A migration file differs from the one applied to this store (forward-only: add a new file instead)."""

    code = "migration_edited"


class StoreClosed(CDPError):
    code = "store_closed"
    status = 503


class StoreUnavailable(CDPError):
    """The database cannot be opened or written (read-only, missing directory, disk full...)."""

    code = "store_unavailable"
    status = 503


class WriterUnavailable(CDPError):
    """The ingest writer process could not take or finish a write; nothing was stored, retry."""

    code = "writer_unavailable"
    status = 503


class UnsupportedEncoding(CDPError):
    code = "unsupported_encoding"
    status = 415


class UnknownProfile(NotFound):
    code = "unknown_profile"


class ResolutionFailed(CDPError):
    code = "resolution_failed"
    status = 500


class UnknownSegment(NotFound):
    code = "unknown_segment"


class SegmentExists(CDPError):
    code = "segment_exists"
    status = 409


class SegmentInUse(CDPError):
    code = "segment_in_use"
    status = 409


class InvalidModel(InvalidInput):
    """A machine-learned segment's ``model`` or ``select`` that cannot be used (``details.path`` says where)."""

    code = "invalid_model"


class NotEnoughData(CDPError):
    """The store does not (yet) hold what a model needs: too few profiles, a target event that never occurs."""

    code = "not_enough_data"
    status = 422


class MatchModelMissing(NotFound):
    """No identity match model has been made yet."""

    code = "match_model_missing"


class ModelNotTrained(NotFound):
    code = "model_not_trained"


class BackupFailed(CDPError):
    code = "backup_failed"
    status = 500


# -- webhooks ----------------------------------------------------------------------------------------


class UnknownWebhook(NotFound):
    code = "unknown_webhook"


class UnknownMessage(NotFound):
    code = "unknown_message"


class UnsafeURL(InvalidInput):
    """Not http(s), or a host on a private, loopback or link-local address."""

    code = "unsafe_url"


class SecretKeyUnavailable(CDPError):
    """The key that encrypts stored signing secrets is missing or is not the one they were encrypted with."""

    code = "secret_key_unavailable"
    status = 500


# -- privacy -----------------------------------------------------------------------------------------


class UnknownPrivacyRequest(NotFound):
    code = "unknown_privacy_request"

    @classmethod
    def of(cls, request_id: str) -> UnknownPrivacyRequest:
        return cls(f"no privacy request with id {request_id!r}", {"id": request_id})


class ExportNotReady(CDPError):
    code = "export_not_ready"
    status = 409


class ExportExpired(CDPError):
    code = "export_expired"
    status = 410
