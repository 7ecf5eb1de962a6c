-- +goose Up
-- users is the read model built by the users projector (projections package).
CREATE TABLE users (
    id                  text        COLLATE "C" PRIMARY KEY,
    email               text        NOT NULL DEFAULT '',
    first_name          text        NOT NULL DEFAULT '',
    last_name           text        NOT NULL DEFAULT '',
    name                text        NOT NULL DEFAULT '',
    username            text        NOT NULL DEFAULT '',
    image_url           text        NOT NULL DEFAULT '',
    public_metadata     jsonb       NOT NULL DEFAULT '{}',
    created_at          timestamptz,
    updated_at          timestamptz,
    deleted             boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    version_updated_at  bigint      NOT NULL DEFAULT 0,
    version_occurred_at bigint      NOT NULL DEFAULT 0,
    version_delivery_id text        COLLATE "C" NOT NULL DEFAULT '',
    last_position       bigint      NOT NULL DEFAULT 0
);
CREATE INDEX users_email_idx ON users (lower(email)) WHERE email <> '';

-- projection_checkpoints holds each projector's place in ledger order; it is
-- written in the same transaction as the projector's read-model writes.
CREATE TABLE projection_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    applied         bigint      NOT NULL DEFAULT 0,
    failed          bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- projection_failures records poison events a projector skipped.
CREATE TABLE projection_failures (
    projector   text        NOT NULL,
    position    bigint      NOT NULL,
    delivery_id text        NOT NULL,
    error       text        NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, position)
);

-- +goose Down
DROP TABLE projection_failures;
DROP TABLE projection_checkpoints;
DROP TABLE users;
