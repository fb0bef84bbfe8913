-- Version 5: the audit trail (issue 14 §3), the same table as SQLite's 0006_audit.sql.
--
-- One row per committed revision, written in the same transaction as the change it describes
-- (`controlplane/src/store/audit.rs`). Rows are append-only: the control plane never updates
-- one, and deletes only the oldest ones when AURORA_AUDIT_RETENTION prunes them. Each row holds
-- the SHA-256 of its own canonical encoding (`hash`), which covers `prev_hash`, the hash of the
-- row before it, so an edited, deleted or reordered row breaks the chain (`aurora audit verify`).
--
-- seq:       1, 2, 3, ... without gaps, in commit order (writers are serialized by the head row).
-- committed_at: Unix milliseconds, the mutation's own timestamp.
-- changes:   a JSON object, field name -> non-secret value; a credential is only
--            "set" | "cleared" | "replaced", never a value, a hash or a fingerprint.
-- actor:     who: `master-key` (the admin API) or `bootstrap` (the environment at startup).
-- peer:      the caller's address as the gRPC server saw it; '' for bootstrap.
-- replica:   the control-plane process that committed it (hostname:pid:instance).
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    committed_at BIGINT NOT NULL,
    revision  BIGINT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    changes   TEXT NOT NULL,
    actor     TEXT NOT NULL,
    peer      TEXT NOT NULL,
    replica   TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);
CREATE INDEX audit_log_committed_at ON audit_log (committed_at);
CREATE INDEX audit_log_target ON audit_log (target, seq);

-- One row: where the chain starts and ends. first_seq is the oldest retained record (or the
-- next one, when none is retained) and anchor_hash the hash of the record before it (32 zero
-- bytes at the very start); pruning moves both forward. last_seq/last_hash are the newest
-- record (0 and zeros before the first), so deleting the newest rows is detected too.
CREATE TABLE audit_chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    first_seq   BIGINT NOT NULL,
    anchor_hash BYTEA NOT NULL,
    last_seq    BIGINT NOT NULL,
    last_hash   BYTEA NOT NULL
);
INSERT INTO audit_chain (id, first_seq, anchor_hash, last_seq, last_hash)
VALUES (1, 1, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex'));
