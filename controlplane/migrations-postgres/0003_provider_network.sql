-- Version 3: per-provider network settings (as SQLite's 0004_provider_network).
--
-- default_headers: the provider's default request headers, one `name: value` per line (names
--   lower case, values printable ASCII without line breaks); '' = none.
-- client_cert / client_key: a client certificate chain and its private key (PEM) for mutual TLS
--   with the upstream; both set or both NULL. The key is a secret, write-only like credential.
-- ca_pem: CA certificates (PEM) trusted for this provider besides the data plane's roots.
ALTER TABLE providers ADD COLUMN default_headers TEXT NOT NULL DEFAULT '';
ALTER TABLE providers ADD COLUMN client_cert TEXT;
ALTER TABLE providers ADD COLUMN client_key TEXT;
ALTER TABLE providers ADD COLUMN ca_pem TEXT;
