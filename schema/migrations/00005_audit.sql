-- +goose Up
-- audit_access records every audit query and export (who, when, through which
-- channel, which filters, how many rows). It is append-only like the ledger.
CREATE TABLE audit_access (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    channel    text        NOT NULL,
    action     text        NOT NULL,
    filters    jsonb       NOT NULL DEFAULT '{}',
    row_count  bigint      NOT NULL
);
CREATE INDEX audit_access_actor_idx ON audit_access (actor, id);
CREATE TRIGGER audit_access_append_only BEFORE UPDATE OR DELETE ON audit_access
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER audit_access_append_only_truncate BEFORE TRUNCATE ON audit_access
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- audit_verifications records every run of the chain (and signature) check,
-- with its outcome: the workspace shows the last one. Append-only.
CREATE TABLE audit_verifications (
    id                 bigserial   PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    actor              text        NOT NULL,
    channel            text        NOT NULL,
    ok                 boolean     NOT NULL,
    checked            bigint      NOT NULL,
    head_position      bigint      NOT NULL DEFAULT 0,
    head_hash          bytea,
    digest             text        NOT NULL DEFAULT '',
    signatures_checked bigint      NOT NULL DEFAULT 0,
    signatures_failed  bigint      NOT NULL DEFAULT 0,
    first_bad_position bigint      NOT NULL DEFAULT 0,
    problem            text        NOT NULL DEFAULT '',
    duration_ms        bigint      NOT NULL DEFAULT 0
);
CREATE TRIGGER audit_verifications_append_only BEFORE UPDATE OR DELETE ON audit_verifications
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER audit_verifications_append_only_truncate BEFORE TRUNCATE ON audit_verifications
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- +goose Down
DROP TABLE audit_verifications;
DROP TABLE audit_access;
