-- Version 11: per-key limits and budgets (issue 13).
--
-- keys.limit_*: the key's own limits; all NULL = none of its own (the default limits apply),
--   all set = these (0 in a field = no such limit; all 0 = explicitly unlimited).
--   limit_budget_period is 'none', 'day', 'week' or 'month'.
-- settings.default_limit_*: the limits of every key without its own, in the same form (all
--   NULL = no default limits). settings.limit_fallback: 'share' or 'closed', what a data plane
--   does with limited keys while it holds no valid capacity lease.
ALTER TABLE keys ADD COLUMN limit_rpm INTEGER;
ALTER TABLE keys ADD COLUMN limit_tpm INTEGER;
ALTER TABLE keys ADD COLUMN limit_concurrent INTEGER;
ALTER TABLE keys ADD COLUMN limit_budget_tokens INTEGER;
ALTER TABLE keys ADD COLUMN limit_budget_period TEXT;
ALTER TABLE settings ADD COLUMN default_limit_rpm INTEGER;
ALTER TABLE settings ADD COLUMN default_limit_tpm INTEGER;
ALTER TABLE settings ADD COLUMN default_limit_concurrent INTEGER;
ALTER TABLE settings ADD COLUMN default_limit_budget_tokens INTEGER;
ALTER TABLE settings ADD COLUMN default_limit_budget_period TEXT;
ALTER TABLE settings ADD COLUMN limit_fallback TEXT NOT NULL DEFAULT 'share';

