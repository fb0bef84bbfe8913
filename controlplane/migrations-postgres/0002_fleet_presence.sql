-- Version 2: the data planes every control-plane replica serves, so that each replica lists
-- and waits for the whole fleet. A replica rewrites its own rows every second; rows it stopped
-- refreshing (it was killed) expire at `expires_at` and are deleted by the next replica that
-- writes. Nothing here is part of the configuration: no revision, no change-log entry.
CREATE TABLE fleet_presence (
    instance          TEXT NOT NULL,   -- the control-plane replica holding the stream
    registration      BIGINT NOT NULL, -- the stream's id in that replica
    node_id           TEXT NOT NULL,
    address           TEXT,
    version           TEXT NOT NULL,
    connected_at      BIGINT NOT NULL, -- Unix milliseconds, like every timestamp
    last_seen_at      BIGINT NOT NULL,
    acked_revision    BIGINT NOT NULL,
    rejected_revision BIGINT,
    rejected_reason   TEXT,
    expires_at        BIGINT NOT NULL,
    PRIMARY KEY (instance, registration)
);
