-- Segments: definitions, current memberships, every enter/exit, run history, and the transactional
-- outbox that webhooks deliver from.

CREATE TABLE segments (
    key          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT,
    type         TEXT NOT NULL DEFAULT 'rule',      -- rule | cluster | propensity
    parent_key   TEXT REFERENCES segments (key),    -- child segments of a cluster segment
    definition   TEXT NOT NULL,                     -- JSON, as validated
    schedule     TEXT,                              -- JSON {"every": "15m"} or {"cron": "..."}
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX segments_parent ON segments (parent_key) WHERE parent_key IS NOT NULL;

CREATE TABLE memberships (
    segment_key  TEXT NOT NULL REFERENCES segments (key) ON DELETE CASCADE,
    profile_id   TEXT NOT NULL,
    entered_at   TEXT NOT NULL,
    PRIMARY KEY (segment_key, profile_id)
) WITHOUT ROWID;
CREATE INDEX memberships_profile ON memberships (profile_id, segment_key);

CREATE TABLE segment_runs (
    id           INTEGER PRIMARY KEY,
    segment_key  TEXT NOT NULL,
    trigger      TEXT NOT NULL,                     -- manual | schedule | realtime | resolution | merge
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status       TEXT NOT NULL,                     -- succeeded | failed
    size         INTEGER,
    entered      INTEGER NOT NULL DEFAULT 0,
    exited       INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX segment_runs_segment ON segment_runs (segment_key, id);

CREATE TABLE membership_changes (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER,
    segment_key  TEXT NOT NULL,
    profile_id   TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('entered', 'exited')),
    at           TEXT NOT NULL
);
CREATE INDEX membership_changes_segment ON membership_changes (segment_key, id);
CREATE INDEX membership_changes_profile ON membership_changes (profile_id, id);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    message_id   TEXT NOT NULL UNIQUE,              -- msg_<hex>: the webhook-id, stable across retries
    type         TEXT NOT NULL,                     -- segment.entered | segment.exited | profile.merged
    segment_key  TEXT,
    profile_id   TEXT NOT NULL,
    payload      TEXT NOT NULL,                     -- JSON data of the notification
    created_at   TEXT NOT NULL
);
CREATE INDEX outbox_created ON outbox (created_at);
