-- Unambiguous CRM record identifiers (cdp/record_ids.py): '%' and ':' in the SOURCE are escaped (%25, %3A),
-- so the first ':' always separates source and external id. Source 'crm:eu' with id '1' was written
-- 'crm:eu:1', as was source 'crm' with id 'eu:1'; now the first is 'crm%3Aeu:1'. Only records of a source
-- holding ':' or '%' change; every ordinary source keeps its values. The step in cdp/identity/rekey.py runs
-- after these statements, in the same transaction (JSON histories, and records that shared one identifier).

DROP TABLE IF EXISTS temp.record_rekey;
DROP TABLE IF EXISTS temp.record_rekey_keys;

-- The records whose identifier changes.
CREATE TEMP TABLE record_rekey (
    record_id  INTEGER PRIMARY KEY,               -- source_records.id
    old        TEXT NOT NULL,                     -- <source>:<external_id> as written before
    new        TEXT NOT NULL,                     -- the escaped value
    plain      INTEGER NOT NULL DEFAULT 0,        -- a record of an ordinary source also wrote `old` (it keeps it)
    first      INTEGER NOT NULL DEFAULT 0         -- the first of the escaped records that wrote `old`
);
INSERT INTO temp.record_rekey (record_id, old, new)
SELECT id, source || ':' || external_id,
       replace(replace(source, '%', '%25'), ':', '%3A') || ':' || external_id
FROM source_records
WHERE instr(source, ':') > 0 OR instr(source, '%') > 0;
CREATE INDEX temp.record_rekey_old ON record_rekey (old);

UPDATE temp.record_rekey SET plain = EXISTS (
    SELECT 1 FROM source_records p
    WHERE p.source = substr(record_rekey.old, 1, instr(record_rekey.old, ':') - 1)
      AND p.external_id = substr(record_rekey.old, instr(record_rekey.old, ':') + 1)
      AND instr(p.source, '%') = 0
);
UPDATE temp.record_rekey SET first = record_id = (
    SELECT min(o.record_id) FROM temp.record_rekey o WHERE o.old = record_rekey.old
);

-- Keys (record:<value>) that move: those of a value only escaped records wrote, to its first record. A value an
-- ordinary record also wrote stays with it.
CREATE TEMP TABLE record_rekey_keys (old_key TEXT PRIMARY KEY, new_key TEXT NOT NULL);
INSERT INTO temp.record_rekey_keys (old_key, new_key)
SELECT 'record:' || old, 'record:' || new FROM temp.record_rekey WHERE plain = 0 AND first = 1;

-- Identifiers, in two steps (marked, then unmarked) so that no new value meets an old one in the unique index.
-- Records that shared an identifier with another record get one of their own, in the same profile for now.
INSERT INTO identifiers (type, value, profile_id, shared, first_seen)
SELECT 'record', char(1) || k.new, i.profile_id, 0, i.first_seen
FROM temp.record_rekey k JOIN identifiers i ON i.type = 'record' AND i.value = k.old
WHERE k.plain = 1 OR k.first = 0;
UPDATE identifiers SET value = char(1) || (
    SELECT k.new FROM temp.record_rekey k WHERE k.old = identifiers.value AND k.plain = 0 AND k.first = 1
)
WHERE type = 'record' AND value IN (SELECT old FROM temp.record_rekey WHERE plain = 0 AND first = 1);
UPDATE identifiers SET value = substr(value, 2) WHERE type = 'record' AND value >= char(1) AND value < char(2);

-- Where keys are held: link and consent origins, conflicts, match edges, review items, labels.
UPDATE identity_links SET origin = (SELECT new_key FROM temp.record_rekey_keys WHERE old_key = origin)
WHERE origin IN (SELECT old_key FROM temp.record_rekey_keys);
UPDATE profile_consent SET origin = (SELECT new_key FROM temp.record_rekey_keys WHERE old_key = origin)
WHERE origin IN (SELECT old_key FROM temp.record_rekey_keys);
UPDATE identity_conflicts SET origin = (SELECT new_key FROM temp.record_rekey_keys WHERE old_key = origin)
WHERE origin IN (SELECT old_key FROM temp.record_rekey_keys);
UPDATE identity_conflicts SET identifier_value = (
    SELECT k.new FROM temp.record_rekey k WHERE k.old = identifier_value AND k.plain = 0 AND k.first = 1
)
WHERE identifier_type = 'record'
  AND identifier_value IN (SELECT old FROM temp.record_rekey WHERE plain = 0 AND first = 1);

UPDATE OR REPLACE match_edges
SET node_l = coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_l), node_l),
    node_r = coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_r), node_r)
WHERE node_l IN (SELECT old_key FROM temp.record_rekey_keys) OR node_r IN (SELECT old_key FROM temp.record_rekey_keys);

-- Review items and labels keep node_l < node_r.
UPDATE OR REPLACE review_items
SET node_l = min(coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_l), node_l),
                 coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_r), node_r)),
    node_r = max(coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_l), node_l),
                 coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_r), node_r))
WHERE node_l IN (SELECT old_key FROM temp.record_rekey_keys) OR node_r IN (SELECT old_key FROM temp.record_rekey_keys);
UPDATE OR REPLACE identity_labels
SET node_l = min(coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_l), node_l),
                 coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_r), node_r)),
    node_r = max(coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_l), node_l),
                 coalesce((SELECT new_key FROM temp.record_rekey_keys WHERE old_key = node_r), node_r))
WHERE node_l IN (SELECT old_key FROM temp.record_rekey_keys) OR node_r IN (SELECT old_key FROM temp.record_rekey_keys);
