-- +goose Up
-- The rest of what a Clerk app's own users table holds (issue 16): the
-- primary phone number, the primary email's verification, external_id,
-- banned, locked, two-factor, the last sign-in and activity times, and
-- private_metadata (shown to auditors only). Rows projected before this
-- migration get the defaults until `ledger projections rebuild users`
-- (or the user's next event) fills them in; check reports them until then.
ALTER TABLE users
    ADD COLUMN phone_number       text        NOT NULL DEFAULT '',
    ADD COLUMN email_verified     boolean     NOT NULL DEFAULT false,
    ADD COLUMN external_id        text        NOT NULL DEFAULT '',
    ADD COLUMN banned             boolean     NOT NULL DEFAULT false,
    ADD COLUMN locked             boolean     NOT NULL DEFAULT false,
    ADD COLUMN two_factor_enabled boolean     NOT NULL DEFAULT false,
    ADD COLUMN last_sign_in_at    timestamptz,
    ADD COLUMN last_active_at     timestamptz,
    ADD COLUMN private_metadata   jsonb       NOT NULL DEFAULT '{}';
CREATE INDEX users_external_id_idx ON users (external_id) WHERE external_id <> '';

-- +goose Down
DROP INDEX users_external_id_idx;
ALTER TABLE users
    DROP COLUMN private_metadata, DROP COLUMN last_active_at, DROP COLUMN last_sign_in_at,
    DROP COLUMN two_factor_enabled, DROP COLUMN locked, DROP COLUMN banned,
    DROP COLUMN external_id, DROP COLUMN email_verified, DROP COLUMN phone_number;
