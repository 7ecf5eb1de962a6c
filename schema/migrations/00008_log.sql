-- +goose Up
-- The verifiable log (issue 13): a Merkle tree (RFC 6962 hashing) over the
-- ledger in ledger order, replacing the linear hash chain as the tamper
-- evidence. event_chain is kept, frozen, for digests taken before.

-- source: where an event came from ('svix': a verified webhook delivery).
-- The backfill adds the same column; IF NOT EXISTS lets both migrations run.
ALTER TABLE events ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'svix';

-- log_leaves is the tree: one row per leaf (0, 1, ... in ledger order) with
-- its event's position and the hashes the tree stores for it, as
-- golang.org/x/mod/sumdb/tlog makes them (tlog.StoredHashes): the leaf hash,
-- then the hash of each complete subtree the leaf closes, 32 bytes each.
-- Every node of the tree is in exactly one row, so a proof reads O(log n)
-- rows and never recomputes the tree. (One row per leaf rather than one
-- per stored hash: a third of the rows and index entries for the sealer.)
CREATE TABLE log_leaves (
    leaf      bigint PRIMARY KEY,
    position  bigint NOT NULL UNIQUE,
    hashes    bytea  NOT NULL
);
-- log_checkpoints keeps every signed tree head (a C2SP tlog-checkpoint note).
CREATE TABLE log_checkpoints (
    id         bigserial   PRIMARY KEY,
    tree_size  bigint      NOT NULL UNIQUE,
    root       bytea       NOT NULL,
    note       text        NOT NULL,
    signed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER log_leaves_append_only BEFORE UPDATE OR DELETE ON log_leaves
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER log_leaves_append_only_truncate BEFORE TRUNCATE ON log_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE ON log_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER log_checkpoints_append_only_truncate BEFORE TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- The chain sealer is retired: its checkpoint goes (event_chain stays as it
-- is); the tree sealer starts from leaf 0 and builds the tree of every event.
DELETE FROM projection_checkpoints WHERE name = 'chain';

-- audit_verifications also records tree verifications and consistency checks.
ALTER TABLE audit_verifications
    ADD COLUMN kind       text   NOT NULL DEFAULT 'chain',
    ADD COLUMN tree_size  bigint NOT NULL DEFAULT 0,
    ADD COLUMN root       bytea;

-- +goose Down
ALTER TABLE audit_verifications DROP COLUMN root, DROP COLUMN tree_size, DROP COLUMN kind;
DROP TABLE log_checkpoints;
DROP TABLE log_leaves;
