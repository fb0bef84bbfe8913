-- Version 8: per-key endpoint allow-lists (issue 13).
--
-- allowed_endpoints: the key's endpoint rules in canonical text (`PROVIDER METHOD PATH`, see
--   aurora_core::EndpointRule), one per line; '' = every endpoint of the allowed providers.
ALTER TABLE keys ADD COLUMN allowed_endpoints TEXT NOT NULL DEFAULT '';
