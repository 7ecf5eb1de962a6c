-- +goose Up
-- The audit workspace's read models, kept by the workspace projector
-- (projections.Workspace) with its checkpoint.
--
-- user_emails: every email address a user event named (current or past),
-- lower-cased, with the user it belonged to: search by email without
-- reading event bodies. Rows are only added or widened (first/last seen).
CREATE TABLE user_emails (
    email          text        COLLATE "C" NOT NULL,
    user_id        text        COLLATE "C" NOT NULL,
    first_position bigint      NOT NULL,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    PRIMARY KEY (email, user_id)
);
CREATE INDEX user_emails_user_idx ON user_emails (user_id);

-- delivery_counts: deliveries stored per UTC day of arrival and event
-- family (the type up to its first dot): the overview's chart.
CREATE TABLE delivery_counts (
    day        date   NOT NULL,
    family     text   COLLATE "C" NOT NULL,
    deliveries bigint NOT NULL,
    PRIMARY KEY (day, family)
);

-- +goose Down
DROP TABLE delivery_counts;
DROP TABLE user_emails;
