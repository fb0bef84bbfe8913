-- Version 10: per-key limits and budgets (issue 13).
--
-- keys.limit_*: the key's own limits; all NULL = none of its own (the default limits apply),
--   all set = these (0 in a field = no such limit; all 0 = explicitly unlimited).
--   limit_budget_period is 'none', 'day', 'week' or 'month'.
-- settings.default_limit_*: the limits of every key without its own, in the same form (all
--   NULL = no default limits). settings.limit_fallback: 'share' or 'closed', what a data plane
--   does with limited keys while it holds no valid capacity lease.
ALTER TABLE keys ADD COLUMN limit_rpm BIGINT;
ALTER TABLE keys ADD COLUMN limit_tpm BIGINT;
ALTER TABLE keys ADD COLUMN limit_concurrent BIGINT;
ALTER TABLE keys ADD COLUMN limit_budget_tokens BIGINT;
ALTER TABLE keys ADD COLUMN limit_budget_period TEXT;
ALTER TABLE settings ADD COLUMN default_limit_rpm BIGINT;
ALTER TABLE settings ADD COLUMN default_limit_tpm BIGINT;
ALTER TABLE settings ADD COLUMN default_limit_concurrent BIGINT;
ALTER TABLE settings ADD COLUMN default_limit_budget_tokens BIGINT;
ALTER TABLE settings ADD COLUMN default_limit_budget_period TEXT;
ALTER TABLE settings ADD COLUMN limit_fallback TEXT NOT NULL DEFAULT 'share';

-- Fleet-wide limit demand across control-plane replicas (like credential_presence): each
-- replica rewrites its rows (what its data planes reported per limited key in the current
-- minute window, summed) every 250 ms; every replica reads the others' unexpired rows, so
-- the caps it grants its own data planes keep the fleet-wide sum within each limit (see
-- controlplane/src/capacity). Runtime state, never a revision.
--   key_id: the key's UUID, or '' for the row that only says how many data planes
--   (replicas) that control plane serves;
--   admitted/tokens: sums over its data planes for window_start; in_flight: requests in
--   flight now; weight: their summed demand weight; busy: how many of them show demand;
--   budget_tokens: tokens they reported for the key that no committed usage holds yet.
CREATE TABLE limit_presence (
    instance      TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    admitted      BIGINT NOT NULL,
    tokens        BIGINT NOT NULL,
    in_flight     BIGINT NOT NULL,
    weight        BIGINT NOT NULL,
    busy          BIGINT NOT NULL,
    replicas      BIGINT NOT NULL,
    budget_tokens BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (instance, key_id)
);
