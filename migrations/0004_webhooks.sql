-- Webhooks: subscriptions (endpoints), one delivery per (endpoint, outbox message) filled by the
-- dispatcher from the outbox with a high-water mark, and every delivery attempt.

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,       -- wh_<hex>
    url                         TEXT NOT NULL,
    description                 TEXT,
    events                      TEXT NOT NULL,          -- JSON list: segment.entered, segment.exited, profile.merged
    segments                    TEXT,                   -- JSON list of segment keys; NULL: every segment
    enabled                     INTEGER NOT NULL DEFAULT 1,
    disabled_reason             TEXT,                   -- manual | gone (answered 410) | failing (no success for days)
    disabled_at                 TEXT,
    secret                      TEXT NOT NULL,          -- encrypted with a key kept outside the database
    previous_secret             TEXT,                   -- encrypted; also signs until previous_secret_expires_at
    previous_secret_expires_at  TEXT,
    secret_rotated_at           TEXT,
    after_outbox_id             INTEGER NOT NULL,       -- outbox rows up to this id predate the endpoint
    failing_since               TEXT,                   -- first failed attempt since the last success
    last_success_at             TEXT,
    paused_until                TEXT,                   -- Retry-After of a 429/503: nothing is sent before this
    created_at                  TEXT NOT NULL,
    updated_at                  TEXT NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                INTEGER PRIMARY KEY,              -- fan-out order, which is outbox order
    endpoint_id       TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    outbox_id         INTEGER,                          -- NULL for a ping
    message_id        TEXT NOT NULL,                    -- the webhook-id header: the same on every attempt
    type              TEXT NOT NULL,
    segment_key       TEXT,
    profile_id        TEXT,                             -- one profile's deliveries to an endpoint go out in id order
    payload           TEXT,                             -- JSON data for pings; others read the outbox row
    status            TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,       -- every attempt, replays included
    failures          INTEGER NOT NULL DEFAULT 0,       -- failed attempts since queued or replayed (retry schedule index)
    next_attempt_at   TEXT,                             -- pending: due time (or the lease end while in flight)
    last_attempt_at   TEXT,
    last_status_code  INTEGER,
    created_at        TEXT NOT NULL,                    -- when it happened (the outbox row's time)
    finished_at       TEXT,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, profile_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint_id, created_at) WHERE status = 'failed';

CREATE TABLE webhook_attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,                  -- 1, 2, ... over the delivery's life
    at               TEXT NOT NULL,
    status_code      INTEGER,                           -- NULL: no answer (timeout, connection refused, refused URL)
    latency_ms       INTEGER,
    response         TEXT,                              -- the first bytes of the answer's body
    error            TEXT,
    outcome          TEXT NOT NULL CHECK (outcome IN ('succeeded', 'retrying', 'failed')),
    next_attempt_at  TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

CREATE TABLE webhook_state (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
-- Messages written before webhooks existed have no subscriber to go to.
INSERT INTO webhook_state (key, value) SELECT 'outbox_high_water', coalesce(max(id), 0) FROM outbox;
