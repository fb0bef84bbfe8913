-- Version 7: usage reported by data planes (issue 12).
-- The same schema as SQLite's 0008_usage.sql.
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
    bucket_start                BIGINT NOT NULL,
    requests                    BIGINT NOT NULL,
    input_tokens                BIGINT NOT NULL,
    output_tokens               BIGINT NOT NULL,
    cache_read_input_tokens     BIGINT NOT NULL,
    cache_creation_input_tokens BIGINT NOT NULL,
    reasoning_tokens            BIGINT NOT NULL,
    incomplete_requests         BIGINT NOT NULL,
    unknown_requests            BIGINT NOT NULL,
    PRIMARY KEY (key_id, provider, model, bucket_start)
);
CREATE INDEX usage_totals_by_bucket ON usage_totals (bucket_start);

CREATE TABLE usage_reports (
    node_id     TEXT NOT NULL,
    incarnation BYTEA NOT NULL,
    sequence    BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (node_id, incarnation, sequence)
);
CREATE INDEX usage_reports_by_time ON usage_reports (received_at);
