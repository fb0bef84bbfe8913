-- Version 8: usage reported by data planes (issue 12).
--
-- usage_totals: token totals per (key, provider, model, hour). key_id is a key's UUID as text, or the
--   pseudo ids 'master' (the master key) and 'anonymous' (gateway auth off); it is not a
--   foreign key, so a deleted key's usage stays. model is '' when the response named none.
--   bucket_start is the hour's start in Unix milliseconds. Rows are added to, never replaced.
-- usage_reports: the identity of every report committed (node id, process incarnation,
--   sequence), written in the same transaction as its rows, so a report delivered twice counts
--   once. Pruned with the rows (AURORA_USAGE_RETENTION).
-- Neither table touches head: usage writes allocate no configuration revision.
CREATE TABLE usage_totals (
    key_id                      TEXT NOT NULL,
    provider                    TEXT NOT NULL,
    model                       TEXT NOT NULL,
    bucket_start                INTEGER NOT NULL,
    requests                    INTEGER NOT NULL,
    input_tokens                INTEGER NOT NULL,
    output_tokens               INTEGER NOT NULL,
    cache_read_input_tokens     INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    reasoning_tokens            INTEGER NOT NULL,
    incomplete_requests         INTEGER NOT NULL,
    unknown_requests            INTEGER NOT NULL,
    PRIMARY KEY (key_id, provider, model, bucket_start)
);
CREATE INDEX usage_totals_by_bucket ON usage_totals (bucket_start);

CREATE TABLE usage_reports (
    node_id     TEXT NOT NULL,
    incarnation BLOB NOT NULL,
    sequence    INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (node_id, incarnation, sequence)
);
CREATE INDEX usage_reports_by_time ON usage_reports (received_at);
