-- Foundation: keys, raw events, CRM source records, data-quality counters.

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,                 -- key_<hex>, safe to show and log
    kind          TEXT NOT NULL CHECK (kind IN ('write', 'read', 'admin')),
    name          TEXT NOT NULL,                    -- for write keys: the source name
    prefix        TEXT NOT NULL,                    -- first characters of the secret, for recognising it
    secret_hash   TEXT NOT NULL UNIQUE,             -- sha256 of the secret; the secret itself is never stored
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE events (
    id                  INTEGER PRIMARY KEY,        -- arrival order
    message_id          TEXT NOT NULL,
    type                TEXT NOT NULL CHECK (type IN ('track', 'identify', 'page', 'screen', 'group', 'alias')),
    event               TEXT,                       -- track: event name; page/screen: name
    user_id             TEXT,
    anonymous_id        TEXT,
    group_id            TEXT,
    previous_id         TEXT,
    profile_id          TEXT,
    timestamp           TEXT NOT NULL,              -- corrected: receivedAt - (sentAt - originalTimestamp)
    original_timestamp  TEXT,
    sent_at             TEXT,
    received_at         TEXT NOT NULL,
    properties          TEXT,                       -- JSON
    traits              TEXT,                       -- JSON
    context             TEXT,                       -- JSON
    integrations        TEXT,                       -- JSON
    extra               TEXT,                       -- JSON: other top-level keys as sent
    source              TEXT NOT NULL,              -- name of the write key that sent it
    write_key_id        TEXT,
    quality_flags       TEXT                        -- JSON list, e.g. ["invalid_email:traits.email"]
);
-- Every index here costs random page writes on each ingested event, so events keep only two:
-- messageId (deduplication) and profile (timelines, real time segments, lookups by user id).
CREATE UNIQUE INDEX events_message_id ON events (message_id);

CREATE TABLE source_records (
    id                   INTEGER PRIMARY KEY,
    source               TEXT NOT NULL,
    external_id          TEXT NOT NULL,
    email                TEXT,
    phone                TEXT,
    first_name           TEXT,
    last_name            TEXT,
    birthday             TEXT,
    address_street       TEXT,
    address_city         TEXT,
    address_postal_code  TEXT,
    address_country      TEXT,
    company              TEXT,
    title                TEXT,
    traits               TEXT NOT NULL DEFAULT '{}',  -- JSON: every other field, as sent
    quality_flags        TEXT,
    content_hash         TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    UNIQUE (source, external_id)
);
CREATE INDEX source_records_email ON source_records (email) WHERE email IS NOT NULL;
CREATE INDEX source_records_phone ON source_records (phone) WHERE phone IS NOT NULL;

CREATE TABLE quality_counters (
    kind        TEXT NOT NULL CHECK (kind IN ('events', 'records')),
    source      TEXT NOT NULL,
    name        TEXT NOT NULL,                      -- event name or message type; '' for records
    metric      TEXT NOT NULL,                      -- received, stored, duplicates, rejected, missing:F, invalid:F, skewed, max_skew_seconds
    value       REAL NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (kind, source, name, metric)
) WITHOUT ROWID;
