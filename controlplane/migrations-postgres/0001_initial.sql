-- The control plane's schema on PostgreSQL, version 1: the same tables, columns and meaning as
-- the SQLite schema (`controlplane/migrations`, versions 1 to 3), so both backends run the same
-- statements (`controlplane/src/store/sql.rs`).
--
-- Timestamps are Unix milliseconds (BIGINT). Every write transaction starts with
-- `UPDATE head SET revision = revision + 1 ... RETURNING revision`: the head row stays locked
-- until the transaction ends, so writers on every replica are serialized and revisions are
-- gap-free and in commit order.

-- One row: the head revision (0 = nothing has ever been written) and the random id of this
-- store's history (see the SQLite migration 0002_store_id.sql).
CREATE TABLE head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    store_id BYTEA NOT NULL
);
INSERT INTO head (id, revision, store_id)
VALUES (1, 0, decode(replace(gen_random_uuid()::text, '-', ''), 'hex'));

-- One row: global settings and the SHA-256 of the control plane's AURORA_MASTER_KEY.
CREATE TABLE settings (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    passthrough_enabled BOOLEAN NOT NULL,
    v1_alias_enabled    BOOLEAN NOT NULL,
    master_key_hash     BYTEA,
    updated_at          BIGINT NOT NULL
);
INSERT INTO settings (id, passthrough_enabled, v1_alias_enabled, master_key_hash, updated_at)
VALUES (1, TRUE, TRUE, NULL, 0);

-- One row per provider that has a record; no record means the provider is disabled.
CREATE TABLE providers (
    name       TEXT PRIMARY KEY,
    enabled    BOOLEAN NOT NULL,
    base_url   TEXT NOT NULL,
    -- The upstream credential. Write-only through the admin API; sent only to data planes.
    credential TEXT,
    updated_at BIGINT NOT NULL
);

-- Gateway keys. The secret itself is never stored: only its SHA-256 and a redacted form.
CREATE TABLE keys (
    -- UUIDv7 text, so ordering by id is creation order; byte order ("C"), whatever the
    -- database's collation.
    id                TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL,
    hash              BYTEA NOT NULL UNIQUE,
    redacted          TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    expires_at        BIGINT,
    allowed_providers TEXT NOT NULL,    -- comma-separated provider names; '' = every provider
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    revoked_at        BIGINT
);

-- The change log: a redo log of every revision (see the SQLite schema).
CREATE TABLE changes (
    revision     BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,  -- settings | provider | key | master_key
    object_id    TEXT NOT NULL,
    op           TEXT NOT NULL,  -- upsert | delete
    payload      BYTEA NOT NULL,
    committed_at BIGINT NOT NULL,
    PRIMARY KEY (revision, seq)
);

-- One row that the control plane rewrites every few seconds to find out whether the database
-- can still write, without allocating a revision.
CREATE TABLE write_probe (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at BIGINT NOT NULL
);
