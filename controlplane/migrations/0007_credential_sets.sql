-- Version 7: several upstream credentials per provider (issue 15).
--
-- Each row is one named credential of a provider: `weight` is its share of the traffic among
-- the enabled credentials that are not cooling down, `enabled` takes it out of rotation without
-- forgetting it. The secret is write-only through the admin API and sent only to data planes;
-- it is stored sealed in `secret_sealed` (envelope encryption, as 0005's columns; bound to the
-- provider and the credential's name), and every read and write of it goes through
-- `store/credentials.rs` (`seal_secret`/`open_secret`).
-- The single `providers.credential` of earlier versions becomes the credential named `default`
-- (the one the product page's `<PROVIDER>_API_KEY` and `UpsertProvider.credential` set): it is
-- copied here into the plaintext `secret` column, the only thing that column is for, and the
-- control plane seals it into `secret_sealed` (and NULLs `secret`) at the start that runs this
-- migration, before it serves. The old column is cleared so the secret lives in one place only.
CREATE TABLE provider_credentials (
    provider   TEXT NOT NULL,
    name       TEXT NOT NULL,
    weight     INTEGER NOT NULL,
    enabled    INTEGER NOT NULL,
    secret     TEXT,
    secret_sealed BLOB,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (provider, name)
);

INSERT INTO provider_credentials (provider, name, weight, enabled, secret, created_at, updated_at)
    SELECT name, 'default', 1, 1, credential, updated_at, updated_at FROM providers WHERE credential IS NOT NULL;

UPDATE providers SET credential = NULL;
