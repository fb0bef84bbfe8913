-- Version 6: several upstream credentials per provider (as SQLite's 0007_credential_sets).
--
-- Each row is one named credential of a provider: `weight` is its share of the traffic among
-- the enabled credentials that are not cooling down, `enabled` takes it out of rotation without
-- forgetting it. The secret is write-only through the admin API and sent only to data planes;
-- it is stored sealed in `secret_sealed` (envelope encryption, as 0004's columns; bound to the
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
    weight     BIGINT NOT NULL,
    enabled    BOOLEAN NOT NULL,
    secret     TEXT,
    secret_sealed BYTEA,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (provider, name)
);

INSERT INTO provider_credentials (provider, name, weight, enabled, secret, created_at, updated_at)
    SELECT name, 'default', 1, TRUE, credential, updated_at, updated_at FROM providers WHERE credential IS NOT NULL;

UPDATE providers SET credential = NULL;

-- Fleet-wide credential health across control-plane replicas (like fleet_presence): each
-- replica rewrites its rows (its data planes' reports, summed per credential) every 250 ms and
-- at once when one of its data planes reports a new cooldown; every replica reads the others'
-- unexpired rows, adds them to `aurora providers get` and fans their cooldowns out to its own
-- data planes. Runtime state, never a revision.
CREATE TABLE credential_presence (
    instance          TEXT NOT NULL,
    provider          TEXT NOT NULL,
    credential        TEXT NOT NULL,
    requests          BIGINT NOT NULL,
    throttled         BIGINT NOT NULL,
    auth_failures     BIGINT NOT NULL,
    cooldown_until_ms BIGINT NOT NULL,
    failing           BOOLEAN NOT NULL,
    replicas          BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    PRIMARY KEY (instance, provider, credential)
);
