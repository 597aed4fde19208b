-- Machine-learned segments and traits: trained models (one row per training), model outputs per
-- profile, and the job-title persona labels people give.

-- What models write about a profile (propensity_<key>, persona, persona_confidence), kept apart from
-- `computed` (which trait refreshes rewrite) and shown merged into it.
ALTER TABLE profiles ADD COLUMN scores TEXT NOT NULL DEFAULT '{}';

CREATE TABLE ml_models (
    id           INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: a model id names one training forever
    owner        TEXT NOT NULL,                     -- a segment key, or 'personas'
    kind         TEXT NOT NULL,                     -- cluster | propensity | persona
    created_at   TEXT NOT NULL,
    features     TEXT NOT NULL DEFAULT '[]',        -- JSON: the features the model used, in order
    params       TEXT NOT NULL DEFAULT '{}',        -- JSON: the model settings it was trained with
    metrics      TEXT NOT NULL DEFAULT '{}',        -- JSON: quality scores, sizes, top features
    artifact     BLOB NOT NULL                      -- the fitted objects (pickle; written and read by cdp only)
);
CREATE INDEX ml_models_owner ON ml_models (owner, id);

CREATE TABLE persona_labels (
    title_key    TEXT PRIMARY KEY,                  -- the title normalised (lower case, single spaces)
    title        TEXT NOT NULL,                     -- as the person labelled it
    persona      TEXT NOT NULL,
    labeled_at   TEXT NOT NULL
);
