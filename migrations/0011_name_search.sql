-- Person search by name, by prefix, on an index (the console's people search; GET /v1/profiles?q=).
-- Each expression is the lower-cased name the search compares with a range (value >= q AND value < q || U+10FFFF),
-- so a prefix costs a B-tree seek instead of a scan of every profile's JSON. "first last" covers a first-name
-- prefix as well as a full name; last names and a single "name" trait have their own. The id (profile_id) at
-- the end makes each index covering: a broad prefix reads no table row per match.
CREATE INDEX profiles_search_full_name ON profiles (
    lower(coalesce(json_extract(traits, '$.first_name'), '') || ' ' || coalesce(json_extract(traits, '$.last_name'), '')),
    id
);
CREATE INDEX profiles_search_last_name ON profiles (lower(json_extract(traits, '$.last_name')), id);
CREATE INDEX profiles_search_name ON profiles (lower(json_extract(traits, '$.name')), id);
CREATE INDEX source_records_search_full_name ON source_records (
    lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')),
    profile_id
);
CREATE INDEX source_records_search_last_name ON source_records (lower(last_name), profile_id);
CREATE INDEX source_records_search_external_id ON source_records (lower(external_id), profile_id);
