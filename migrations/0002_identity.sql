-- Identity: profiles with stable ids, the deterministic identity graph, merge history, conflicts,
-- probabilistic match edges and stored match models.

CREATE TABLE profiles (
    id           TEXT PRIMARY KEY,              -- prof_<hex>; never reused
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    merged_into  TEXT,                          -- set when merged away: lookups redirect to the survivor
    traits       TEXT NOT NULL DEFAULT '{}',    -- unified traits, refreshed by resolution (JSON)
    computed     TEXT NOT NULL DEFAULT '{}',    -- computed traits, refreshed by resolution (JSON)
    refreshed_at TEXT
);
CREATE INDEX profiles_merged_into ON profiles (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE identifiers (
    id          INTEGER PRIMARY KEY,
    type        TEXT NOT NULL,                  -- user_id, anonymous_id, email, phone, external_id, record
    value       TEXT NOT NULL,
    profile_id  TEXT NOT NULL REFERENCES profiles (id),
    shared      INTEGER NOT NULL DEFAULT 0,     -- seen with too many people: no longer links profiles
    first_seen  TEXT NOT NULL,
    UNIQUE (type, value)
);
CREATE INDEX identifiers_profile ON identifiers (profile_id);

-- Attributes that tell people apart (birthday, first name), held by the identifier they came with
-- (a CRM record, a user id): they never link, they only guard merges.
CREATE TABLE identifier_attributes (
    identifier_id  INTEGER NOT NULL REFERENCES identifiers (id),
    type           TEXT NOT NULL,
    value          TEXT NOT NULL,
    PRIMARY KEY (identifier_id, type, value)
) WITHOUT ROWID;

-- Deterministic evidence: identifier b was seen with identifier a (the message's anchor), in order.
CREATE TABLE identity_links (
    id          INTEGER PRIMARY KEY,
    a           INTEGER NOT NULL REFERENCES identifiers (id),
    b           INTEGER NOT NULL REFERENCES identifiers (id),
    kind        TEXT NOT NULL DEFAULT 'seen',   -- seen | alias
    origin      TEXT NOT NULL,                  -- event:<message_id> or record:<source>:<external_id>
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX identity_links_pair ON identity_links (a, b);
CREATE INDEX identity_links_origin ON identity_links (origin);

CREATE TABLE merges (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('merge', 'split')),
    profile_id   TEXT NOT NULL,                 -- merge: the survivor; split: the profile that was split
    other_id     TEXT NOT NULL,                 -- merge: the profile merged away; split: the new profile
    reason       TEXT NOT NULL,                 -- identifier | alias | probabilistic | resolution
    details      TEXT NOT NULL DEFAULT '{}',    -- JSON: identifier, model version + match weight, ...
    created_at   TEXT NOT NULL
);
CREATE INDEX merges_profile ON merges (profile_id);
CREATE INDEX merges_other ON merges (other_id);

CREATE TABLE identity_conflicts (
    id           INTEGER PRIMARY KEY,
    rule         TEXT NOT NULL,                 -- limit:user_id, attribute:birthday, blocked, shared, chaining
    message      TEXT NOT NULL,
    identifier_type  TEXT,
    identifier_value TEXT,
    profile_ids  TEXT NOT NULL DEFAULT '[]',    -- JSON list
    origin       TEXT,
    created_at   TEXT NOT NULL
);

CREATE TABLE identity_models (
    version      INTEGER PRIMARY KEY,
    created_at   TEXT NOT NULL,
    model        TEXT NOT NULL,                 -- JSON (Splink settings + our metadata)
    trained_rows INTEGER NOT NULL,
    threshold    REAL NOT NULL,
    metrics      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE match_edges (
    node_l            TEXT NOT NULL,            -- record:<source>:<external_id> or user_id:<id>
    node_r            TEXT NOT NULL,
    match_weight      REAL NOT NULL,
    match_probability REAL NOT NULL,
    model_version     INTEGER NOT NULL,
    contributions     TEXT NOT NULL DEFAULT '{}',
    created_at        TEXT NOT NULL,
    PRIMARY KEY (node_l, node_r)
) WITHOUT ROWID;
CREATE INDEX match_edges_r ON match_edges (node_r);

CREATE TABLE resolution_runs (
    id           INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,                 -- running | succeeded | failed
    summary      TEXT NOT NULL DEFAULT '{}',
    error        TEXT
);

CREATE TABLE resolution_state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE profile_groups (
    profile_id  TEXT NOT NULL,
    group_id    TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (profile_id, group_id)
) WITHOUT ROWID;

ALTER TABLE source_records ADD COLUMN profile_id TEXT;
CREATE INDEX source_records_profile ON source_records (profile_id);
CREATE INDEX events_profile ON events (profile_id, timestamp) WHERE profile_id IS NOT NULL;
