-- The control plane's schema, version 1.
--
-- Timestamps are Unix milliseconds (INTEGER). Booleans are 0/1. Every write transaction starts
-- with `UPDATE head SET revision = revision + 1 ... RETURNING revision`, which allocates the
-- transaction's revision and serializes writers, so revisions are gap-free and in commit order.

-- One row: the store's head revision (0 = nothing has ever been written).
CREATE TABLE head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO head (id, revision) VALUES (1, 0);

-- One row: global settings and the SHA-256 of the control plane's AURORA_MASTER_KEY.
CREATE TABLE settings (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    passthrough_enabled INTEGER NOT NULL,
    v1_alias_enabled    INTEGER NOT NULL,
    master_key_hash     BLOB,
    updated_at          INTEGER NOT NULL
);
INSERT INTO settings (id, passthrough_enabled, v1_alias_enabled, master_key_hash, updated_at)
VALUES (1, 1, 1, NULL, 0);

-- One row per provider that has a record; no record means the provider is disabled.
CREATE TABLE providers (
    name       TEXT PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    base_url   TEXT NOT NULL,
    -- The upstream credential. Write-only through the admin API; sent only to data planes.
    credential TEXT,
    updated_at INTEGER NOT NULL
);

-- Gateway keys. The secret itself is never stored: only its SHA-256 and a redacted form.
CREATE TABLE keys (
    id                TEXT PRIMARY KEY, -- UUIDv7, so ordering by id is creation order
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL,
    hash              BLOB NOT NULL UNIQUE,
    redacted          TEXT NOT NULL,
    enabled           INTEGER NOT NULL,
    expires_at        INTEGER,
    allowed_providers TEXT NOT NULL,    -- comma-separated provider names; '' = every provider
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    revoked_at        INTEGER
);

-- The change log: a redo log of every revision. A revision holds one row per object it
-- changed (`seq` orders them); `payload` is a prost-encoded aurora.v1.Change carrying the
-- object's state after the mutation, or its delete marker.
CREATE TABLE changes (
    revision     INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,  -- settings | provider | key | master_key
    object_id    TEXT NOT NULL,
    op           TEXT NOT NULL,  -- upsert | delete
    payload      BLOB NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)
);
