-- Privacy and data-subject rights: durable requests (delete, suppress, export), the suppression list,
-- a per-database salt for hashing identifiers, and consent per profile and category.

-- One row per request. What stays for audit holds no personal data: identifiers only as salted hashes,
-- counts, times and the admin key that asked. `work` holds what a running request still needs (the
-- identifier values and profile ids it found) and is cleared when the request ends, so a crash resumes it.
CREATE TABLE privacy_requests (
    id            TEXT PRIMARY KEY,                -- prq_<hex>
    type          TEXT NOT NULL CHECK (type IN ('delete', 'suppress', 'suppress_with_delete', 'unsuppress', 'export')),
    status        TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    subject       TEXT NOT NULL DEFAULT '[]',      -- JSON: [{"type", "hash"}] (salted), or [{"type": "profile_id", "hash"}]
    work          TEXT,                            -- JSON while pending/running: values to act on; NULL once ended
    step          TEXT,                            -- where a running request is (resumes from here)
    found         TEXT NOT NULL DEFAULT '{}',      -- JSON: profiles found, whether identifiers shared a profile
    counts        TEXT NOT NULL DEFAULT '{}',      -- JSON: rows removed per kind
    requested_by  TEXT,                            -- the admin key id (or 'cli')
    error         TEXT,
    export_path   TEXT,                            -- export: the file, until it expires
    expires_at    TEXT,                            -- export: when the download is removed
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX privacy_requests_open ON privacy_requests (created_at) WHERE status IN ('pending', 'running');

-- Suppressed identifiers, as salted hashes of "type:normalised value": events and records that carry one
-- are acknowledged and not stored.
CREATE TABLE privacy_suppressions (
    hash        TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    created_at  TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE privacy_state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO privacy_state (key, value) VALUES ('suppression_version', '0');

-- Consent per profile and category (Segment's context.consent.categoryPreferences; a `consent` object on
-- CRM records): the most recent statement wins per category.
CREATE TABLE profile_consent (
    profile_id  TEXT NOT NULL,
    category    TEXT NOT NULL,
    granted     INTEGER NOT NULL CHECK (granted IN (0, 1)),
    at          TEXT NOT NULL,                    -- when it was stated (the message's timestamp)
    origin      TEXT NOT NULL,                    -- event:<message_id> | record:<source>:<external_id> | merge
    PRIMARY KEY (profile_id, category)
) WITHOUT ROWID;

CREATE TABLE consent_conflicts (
    id           INTEGER PRIMARY KEY,
    profile_id   TEXT NOT NULL,                   -- the survivor
    other_id     TEXT NOT NULL,                   -- the profile merged into it
    category     TEXT NOT NULL,
    kept         INTEGER NOT NULL,                -- the stricter value (0 when either side withdrew)
    created_at   TEXT NOT NULL
);
CREATE INDEX consent_conflicts_profile ON consent_conflicts (profile_id);

-- The key of the salted hashes above (random per database).
INSERT INTO privacy_state (key, value) VALUES ('salt', lower(hex(randomblob(32))));

-- Erasure finds a person's rows by profile and identifier: these lookups must not scan whole tables.
CREATE INDEX identity_links_b ON identity_links (b);
CREATE INDEX outbox_profile ON outbox (profile_id);
CREATE INDEX webhook_deliveries_profile ON webhook_deliveries (profile_id) WHERE profile_id IS NOT NULL;
