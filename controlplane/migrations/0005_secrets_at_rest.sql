-- Version 5: secrets at rest (issue 14).
--
-- Every secret is sealed with envelope encryption (`controlplane/src/store/sealed.rs`): a blob
-- holding the id of the operator's key-encryption key (AURORA_ENCRYPTION_KEY), the value's own
-- data key wrapped by it, and the value encrypted under the data key, bound to its provider and
-- column. The plaintext columns of earlier versions (providers.client_key,
-- settings.master_key_hash) stay in the schema but are always NULL: the control plane seals what
-- an older version left there at its first start with a key, and scrubs the change log, which
-- from now on never holds a secret (its entries are completed with the current secrets when
-- read). Upstream credentials move to `provider_credentials` (0007), sealed there in
-- `secret_sealed`; `providers.credential` is emptied by that migration.
ALTER TABLE providers ADD COLUMN client_key_sealed BLOB;
-- The SHA-256 of AURORA_MASTER_KEY that data planes check gateway tokens against, sealed.
ALTER TABLE settings ADD COLUMN master_key_sealed BLOB;
