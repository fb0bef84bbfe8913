-- One row that the control plane rewrites every few seconds to find out whether the database
-- can still write (a full disk, a read-only or failing volume), without allocating a revision.
CREATE TABLE write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
