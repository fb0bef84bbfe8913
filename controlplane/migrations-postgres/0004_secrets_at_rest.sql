-- Version 4: secrets at rest (as SQLite's 0005_secrets_at_rest; see there).
ALTER TABLE providers ADD COLUMN client_key_sealed BYTEA;
ALTER TABLE settings ADD COLUMN master_key_sealed BYTEA;
