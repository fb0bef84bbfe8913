-- Version 10: key rotation with a grace period (issue 13).
--
-- The secret a rotation replaced: its SHA-256 and redacted form (never the plaintext), and when
-- it stops being accepted (Unix milliseconds). All NULL for a key never rotated, or rotated
-- with no grace period. A second rotation overwrites them.
ALTER TABLE keys ADD COLUMN previous_hash BLOB;
ALTER TABLE keys ADD COLUMN previous_redacted TEXT;
ALTER TABLE keys ADD COLUMN previous_expires_at INTEGER;
