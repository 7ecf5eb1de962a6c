-- +goose Up
-- Faithful to Clerk (issue 12): the backfill's resumable state and the
-- reconcile runs. The snapshots themselves are events (types user.snapshot
-- and user.snapshot_deleted, source 'clerk_api').

-- clerk_imports: one row per import kind ('users', 'organizations', ...):
-- where the pass is (the next list offset), committed in the same
-- transaction as the page's events, so an interrupted import resumes at the
-- first page it had not stored. finished_at is set when a pass completes;
-- the next import then starts a new pass from offset 0.
CREATE TABLE clerk_imports (
    kind         text        COLLATE "C" PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    next_offset  bigint      NOT NULL DEFAULT 0,
    total        bigint      NOT NULL DEFAULT -1,
    imported     bigint      NOT NULL DEFAULT 0,
    unchanged    bigint      NOT NULL DEFAULT 0,
    failed       bigint      NOT NULL DEFAULT 0
);

-- clerk_import_failures: objects the API returned that could not be stored
-- (malformed), by id and list position, with the reason; never their bytes.
CREATE TABLE clerk_import_failures (
    kind       text        COLLATE "C" NOT NULL,
    object_id  text        COLLATE "C" NOT NULL,
    position   bigint      NOT NULL,
    reason     text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, object_id, position)
);

-- reconcile_runs: every `ledger reconcile` (and scheduled run in serve):
-- when, how it was started, the drift found per kind, what was repaired,
-- and why repairs were held back (the safety limit), shown to auditors.
CREATE TABLE reconcile_runs (
    id            bigserial   PRIMARY KEY,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    trigger       text        NOT NULL,
    dry_run       boolean     NOT NULL,
    clerk_users   bigint      NOT NULL,
    ledger_users  bigint      NOT NULL,
    missing       bigint      NOT NULL,
    stale         bigint      NOT NULL,
    gone          bigint      NOT NULL,
    same          bigint      NOT NULL,
    deleted_here  bigint      NOT NULL,
    repaired      bigint      NOT NULL,
    failed        bigint      NOT NULL,
    held_back     text        NOT NULL DEFAULT '',
    error         text        NOT NULL DEFAULT ''
);
CREATE TRIGGER reconcile_runs_append_only BEFORE UPDATE OR DELETE ON reconcile_runs
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- +goose Down
DROP TABLE reconcile_runs;
DROP TABLE clerk_import_failures;
DROP TABLE clerk_imports;
