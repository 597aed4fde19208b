"""One typed settings object for the whole platform.

Built once (``Settings()`` reads ``CDP_*`` environment variables and an optional ``.env``)
and passed down; library code never reads ``os.environ`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDP_", env_file=".env", extra="ignore", frozen=True)

    db: Path = Field(Path("cdp.db"), description="Path of the SQLite file (the system of record).")
    create_dirs: bool = Field(
        False, description="Create the store's directory when it does not exist (else that is an error)."
    )
    host: str = Field("127.0.0.1", description="Interface the API server listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the API server listens on.")

    # Store
    busy_timeout_ms: int = Field(10_000, ge=0, description="How long a writer waits for the SQLite lock.")
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "NORMAL",
        description=(
            "SQLite synchronous level. NORMAL in WAL mode survives a crash of the process (kill -9); "
            "FULL also survives power loss at some cost in write speed."
        ),
    )
    write_batch_max: int = Field(
        64, ge=1, description="Most ingest requests committed together in one transaction (group commit)."
    )
    ingest_writer: Literal["auto", "process", "thread"] = Field(
        "auto",
        description=(
            "Where tracking events are written. 'process': a writer process of its own, so validating "
            "requests and writing rows use two cores (the fastest under load); 'thread': the writer "
            "thread of the process that received them; 'auto': a process under `cdp serve`, a thread "
            "in the library and the other commands."
        ),
    )

    # Normalisation
    default_phone_region: str = Field(
        "US", min_length=2, max_length=2, description="Region for phone numbers written without +country."
    )
    date_order: Literal["MDY", "DMY"] = Field(
        "MDY", description="How to read ambiguous slash dates such as 03/04/1985."
    )

    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest body of any other route (segments, webhooks, ...), in bytes."
    )
    # Tracking API limits (Segment's)
    max_message_bytes: int = Field(32 * 1024, description="Largest single message, in bytes of JSON.")
    max_batch_bytes: int = Field(500 * 1024, description="Largest batch request body, in bytes (uncompressed).")
    max_batch_events: int = Field(2_500, description="Most messages in one batch.")
    max_records_bytes: int = Field(
        50 * 1024 * 1024, description="Largest POST /v1/records body, in bytes (uncompressed)."
    )
    clock_skew_report_seconds: float = Field(
        60.0, description="Clock skew (sentAt vs receivedAt) above which a message counts as skewed."
    )

    # Identity resolution
    identity_limits: dict[str, int] = Field(
        default_factory=lambda: {"user_id": 1},
        description="Most identifiers of a type one profile may hold; a merge that would exceed it is refused.",
    )
    identity_blocked_values: list[str] = Field(
        default_factory=lambda: [
            "",
            "null",
            "none",
            "nil",
            "undefined",
            "nan",
            "0",
            "-1",
            "-",
            "n/a",
            "na",
            "unknown",
            "anonymous",
            "guest",
            "test",
            "user",
            "default",
            "[object object]",
            "test@test.com",
            "test@example.com",
            "email@example.com",
            "user@example.com",
            "noreply@example.com",
            "no-reply@example.com",
            "+10000000000",
            "+11111111111",
            "+11234567890",
        ],
        description="Identifier values that never link profiles (compared lower-case).",
    )
    identity_shared_after: int = Field(
        3,
        ge=1,
        description="Refused links after which an identifier counts as shared (a family iPad) and stops linking.",
    )
    identity_attribute_guard: bool = Field(
        True, description="Refuse identifier links between profiles with different birthdays or first names."
    )
    match_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "Splink match probability at or above which two records are the same person. Unset (the default), "
            "each model chooses its own from the data, aiming at match_precision."
        ),
    )
    match_precision: float = Field(
        0.98,
        gt=0.5,
        lt=1,
        description=(
            "Pairwise precision a model's chosen threshold aims for: the lowest threshold whose pairs the "
            "model expects to be at least this share right (see cdp.identity.matching.choose_threshold)."
        ),
    )
    match_strong_threshold: float = Field(
        0.999,
        gt=0,
        lt=1,
        description=(
            "Match probability at or above which one edge may join two clusters of several records each; a "
            "weaker edge needs at least half of the record pairs between them to match (the chaining guard)."
        ),
    )
    match_support_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "Match probability from which a pair below the match threshold corroborates: a source record joins "
            "a person when such pairs tie it to several of their records (as many as the chaining guard asks), "
            "never on one pair alone. At or above match_threshold, nothing corroborates."
        ),
    )
    review_threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "Match probability from which a pair below the match threshold is kept in the review queue "
            "(GET /v1/identity/review, cdp identity review) for a person to decide."
        ),
    )
    trait_priority: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'Per-trait source priority for unified traits, e.g. {"first_name": ["salesforce", "hubspot"]}: '
            "listed sources win in that order; otherwise the most recent non-null value wins."
        ),
    )
    trait_majority: list[str] = Field(
        default_factory=list,
        description=(
            'Traits for which the value seen in the most records and events wins, e.g. ["first_name", '
            '"last_name"]: a one-off variant (a typo) loses to the spelling most sources agree on. After '
            "trait_priority, before recency."
        ),
    )
    retrain_growth: float = Field(
        0.5, ge=0, description="The scheduled resolution retrains the model when the data grew by this share."
    )

    # API
    access_log: bool = Field(
        True, description="Log one line per request (method, path, status, ms) on the cdp.access logger."
    )
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], description="Origins allowed on /v1/*.")
    key_cache_seconds: float = Field(5.0, ge=0, description="How long a verified key is cached in memory.")
    tracemalloc_seconds: float = Field(
        0.0, ge=0, description="Diagnostics: log the allocation sites that grew, every N seconds (0: off; slow)."
    )

    # Console
    console_session_seconds: int = Field(
        8 * 3600, ge=1, le=30 * 86400, description="How long a console sign-in lasts before the token is asked again."
    )
    console_secret: SecretStr | None = Field(
        None,
        description=(
            "Key that signs console session cookies (32+ characters). Unset: a random one per server process, "
            "so a restart signs everyone out."
        ),
    )

    # Scheduler
    scheduler_enabled: bool = Field(True, description="Run scheduled jobs inside the server process.")
    resolve_schedule: str = Field("1h", description="How often the full identity-resolution job runs.")

    # Webhooks
    webhooks_allow_private_urls: bool = Field(
        False, description="Allow webhook URLs on private, loopback and link-local addresses (tests, local use)."
    )
    webhooks_timeout_seconds: float = Field(15.0, gt=0, description="Whole-request timeout of one delivery attempt.")
    webhooks_concurrency_per_endpoint: int = Field(
        10, ge=1, description="Most requests in flight to one webhook endpoint at once."
    )
    webhooks_retry_schedule: list[NonNegativeFloat] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        description=(
            "Seconds to wait before each attempt (the first is the delay before attempt 1, usually 0); after the "
            "last one fails the message is marked failed."
        ),
    )
    webhooks_retry_jitter: float = Field(0.1, ge=0, le=1, description="Random share added to each retry delay.")
    webhooks_disable_after_seconds: float = Field(
        5 * 86400, gt=0, description="An endpoint failing without a single success for this long is disabled."
    )
    webhooks_secret_overlap_seconds: float = Field(
        86400, ge=0, description="After a secret rotation, how long the previous secret keeps signing too."
    )
    webhooks_poll_seconds: float = Field(
        0.1, gt=0, description="How often the dispatcher looks for new outbox rows and due retries."
    )
    privacy_events_chunk: int = Field(
        5000, ge=100, le=100_000, description="Events an erasure removes per transaction (ingest runs in between)."
    )
    privacy_chunk_pause_seconds: float = Field(
        0.0,
        ge=0,
        le=60,
        description="Pause between an erasure's event chunks, so a large erasure yields the disk to live traffic.",
    )
    privacy_export_ttl_hours: float = Field(
        72.0, gt=0, le=24 * 30, description="How long a privacy export stays downloadable before it is removed."
    )
    secret_key: SecretStr | None = Field(
        None, description="Key that encrypts stored webhook secrets; without it, a key file is used (secret_key_file)."
    )
    secret_key_file: Path | None = Field(
        None, description="Key file for stored webhook secrets (default: the database path + '.secret-key', made 0600)."
    )

    @model_validator(mode="after")
    def _strong_at_least_the_threshold(self) -> Settings:
        # Unset, a model picks its own threshold, at most 0.99: a strong match must be at least that.
        if self.match_strong_threshold < (self.match_threshold or 0.99):
            raise ValueError(
                f"match_strong_threshold ({self.match_strong_threshold}) must be at least match_threshold "
                f"({self.match_threshold}): a strong match is one that already links"
            )
        return self
