-- +goose Up
-- The projector runtime records the last runtime error (an SQL error that made
-- a batch roll back and retry) next to the checkpoint, for `projections status`.
ALTER TABLE projection_checkpoints
    ADD COLUMN last_error    text        NOT NULL DEFAULT '',
    ADD COLUMN last_error_at timestamptz;

-- projection_rebuilds has one row per rebuild in progress. The rebuilding
-- process also holds a session advisory lock on (projection_rebuild_lock_ns,
-- hashtext(name)); a row whose lock is not held is left over from a crash.
CREATE TABLE projection_rebuilds (
    name        text        PRIMARY KEY,
    pid         integer     NOT NULL,
    host        text        NOT NULL DEFAULT '',
    phase       text        NOT NULL DEFAULT '',
    done        bigint      NOT NULL DEFAULT 0,
    total       bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE projection_rebuilds;
ALTER TABLE projection_checkpoints DROP COLUMN last_error_at, DROP COLUMN last_error;
