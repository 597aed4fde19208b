-- A count of changes to the identity graph. A process that caches identity facts (the ingest writer
-- process) checks it when another connection has written, and forgets its cache only if the graph
-- itself changed: segment runs, webhook deliveries and the like leave it warm.
CREATE TABLE identity_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO identity_epoch (id, value) VALUES (1, 0);

CREATE TRIGGER identifiers_epoch_insert AFTER INSERT ON identifiers
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER identifiers_epoch_update AFTER UPDATE ON identifiers
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER identifiers_epoch_delete AFTER DELETE ON identifiers
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER identity_links_epoch_insert AFTER INSERT ON identity_links
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER identity_links_epoch_delete AFTER DELETE ON identity_links
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;

CREATE TRIGGER profiles_epoch_merge AFTER UPDATE OF merged_into ON profiles
BEGIN
    UPDATE identity_epoch SET value = value + 1 WHERE id = 1;
END;
