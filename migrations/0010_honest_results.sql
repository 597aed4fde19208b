-- Honest, readable results: a note on a segment run (why a propensity run was not predictive, a cluster
-- run below the quality floor), and the traits a webhook subscription wants in its segment payloads.

ALTER TABLE segment_runs ADD COLUMN note TEXT;             -- what the run found that a person should know
ALTER TABLE webhook_endpoints ADD COLUMN traits TEXT;      -- JSON list of trait paths; NULL: identifiers only
