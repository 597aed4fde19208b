-- Identity stewardship: the review queue of doubtful matches, human labels (must-link / cannot-link
-- constraints honoured by every run) and manual merges and splits (audited, undoable).

-- A pair the model doubts: scored between CDP_REVIEW_THRESHOLD and the match threshold, or a link that
-- merge protection or the chaining guard refused. Nodes are identifier keys (type:value), e.g.
-- record:<source>:<external_id> or user_id:<id>; node_l < node_r.
CREATE TABLE review_items (
    id                INTEGER PRIMARY KEY,
    node_l            TEXT NOT NULL,
    node_r            TEXT NOT NULL,
    reason            TEXT NOT NULL,           -- below_threshold | merge_protection | chaining
    message           TEXT NOT NULL DEFAULT '',
    match_weight      REAL,
    match_probability REAL,
    threshold         REAL,
    model_version     INTEGER,
    contributions     TEXT NOT NULL DEFAULT '{}',  -- per-comparison partial weights (JSON)
    priority          REAL NOT NULL,           -- smaller = a decision teaches more (closest to the threshold)
    status            TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'decided', 'skipped')),
    decision          TEXT,
    note              TEXT,
    decided_by        TEXT,
    decided_at        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (node_l, node_r)
);
CREATE INDEX review_items_open ON review_items (status, priority, id);

-- Human decisions about two identifiers: a must-link (match) or a cannot-link (no_match). One label per
-- pair (the latest decision); every full run and the real-time linker honour them.
CREATE TABLE identity_labels (
    id          INTEGER PRIMARY KEY,
    node_l      TEXT NOT NULL,
    node_r      TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('match', 'no_match')),
    origin      TEXT NOT NULL,                 -- review | merge | split | import
    action_id   INTEGER,                       -- the manual action that made it, if any
    note        TEXT,
    key_id      TEXT,                          -- who: the API key id (or cli)
    created_at  TEXT NOT NULL,
    UNIQUE (node_l, node_r)
);
CREATE INDEX identity_labels_r ON identity_labels (node_r);

-- Manual merges and splits, with what an undo needs.
CREATE TABLE manual_actions (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('merge', 'split')),
    profile_id  TEXT NOT NULL,                 -- merge: the survivor; split: the profile split
    other_id    TEXT NOT NULL,                 -- merge: the profile merged away; split: the new profile
    state       TEXT NOT NULL DEFAULT '{}',    -- JSON: identifier ids, labels replaced
    note        TEXT,
    key_id      TEXT,
    created_at  TEXT NOT NULL,
    undone_at   TEXT
);
CREATE INDEX manual_actions_profile ON manual_actions (profile_id);
CREATE INDEX manual_actions_other ON manual_actions (other_id);
