-- Version 2: a random identity for this store's history.
--
-- Revision numbers alone cannot tell two histories apart: after a database is restored from a
-- backup, or when two control planes point at different databases, revision N of one is not
-- revision N of the other. Data planes echo the id of the history their revision came from, and
-- the control plane sends a full snapshot whenever it is not its own.
ALTER TABLE head ADD COLUMN store_id BLOB;
UPDATE head SET store_id = randomblob(16) WHERE id = 1;
