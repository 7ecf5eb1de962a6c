-- +goose Up
-- event_chain seals the ledger: row seq holds the hash of the seq-th event in
-- ledger order, covering the previous hash and every stored field of the event
-- (domain.ChainHash). It is written by the chain sealer, a projector, in
-- ledger order, and is append-only like events.
CREATE TABLE event_chain (
    seq        bigint      PRIMARY KEY,
    position   bigint      NOT NULL UNIQUE,
    hash       bytea       NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER event_chain_append_only BEFORE UPDATE OR DELETE ON event_chain
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER event_chain_append_only_truncate BEFORE TRUNCATE ON event_chain
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- +goose Down
DROP TABLE event_chain;
