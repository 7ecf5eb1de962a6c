-- +goose Up
-- events is the ledger: one row per verified Clerk webhook delivery, append-only.
-- Ledger order is (transaction_id, position). Readers only take rows whose
-- transaction_id is below pg_snapshot_xmin(pg_current_snapshot()), so a row that
-- commits late is never skipped (Watermill's xid8 gate).
CREATE TABLE events (
    position        BIGSERIAL   NOT NULL,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    message_uuid    uuid        NOT NULL,
    delivery_id     text        COLLATE "C" NOT NULL,
    type            text        COLLATE "C" NOT NULL,
    user_id         text        COLLATE "C",
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    body            text        NOT NULL,
    svix_timestamp  bigint      NOT NULL,
    svix_signature  text        NOT NULL,
    PRIMARY KEY (transaction_id, position),
    CONSTRAINT events_delivery_id_key UNIQUE (delivery_id)
);
COMMENT ON COLUMN events.body IS 'the exact verified webhook body, byte for byte';
CREATE UNIQUE INDEX events_position_key ON events (position);
CREATE INDEX events_user_idx ON events (user_id, transaction_id, position) WHERE user_id IS NOT NULL;
CREATE INDEX events_type_idx ON events (type, transaction_id, position);
CREATE INDEX events_occurred_at_idx ON events (occurred_at);

-- +goose StatementBegin
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- +goose Down
DROP TABLE events;
DROP FUNCTION ledger_append_only();
