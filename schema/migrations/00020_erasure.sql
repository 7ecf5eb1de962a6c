-- +goose Up
-- Erasure by crypto-shredding (issue 14). The body of every event about a
-- user is stored sealed under that user's data key (events.body_sealed,
-- with events.body ''), the key wrapped by the master key
-- (LEDGER_MASTER_KEY) in user_keys. Erasing a user destroys the wrapped key
-- (wrapped becomes NULL; the row stays, so no new key can be made for the
-- user by a delivery racing the erasure): every body sealed under it is then
-- unreadable, and the events table is never updated. body_commitment is the
-- commitment each sealed event's leaf makes (domain.BodyCommitment(salt,
-- body), the salt inside the ciphertext), so the tree sealer and the
-- verifier never need a key.
ALTER TABLE events
    ADD COLUMN body_sealed     bytea,
    ADD COLUMN body_commitment bytea;
COMMENT ON COLUMN events.body IS 'the exact verified webhook body, byte for byte; '''' when body_sealed holds it';
COMMENT ON COLUMN events.body_sealed IS 'the body sealed under its user''s data key (userkeys), or 0x00 when it was discarded (a delivery for an erased user)';

CREATE TABLE user_keys (
    user_id      text        COLLATE "C" PRIMARY KEY,
    wrapped      bytea,          -- NULL once destroyed by erasure
    kek_id       text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);
-- ledger_user_key is the wrapped data key of a user (NULL: destroyed, or
-- none): every ledger read selects it with the sealed body, in the same
-- snapshot, so a key destroyed by another process is never used again.
CREATE FUNCTION ledger_user_key(text) RETURNS bytea LANGUAGE sql STABLE
    AS $$ SELECT wrapped FROM user_keys WHERE user_id = $1 $$;
CREATE INDEX user_keys_kek_idx ON user_keys (kek_id) WHERE wrapped IS NOT NULL;

-- erasures records each erasure: the intent (written with the key's
-- destruction) and completed_at once every read model is cleaned; a row
-- with completed_at NULL is finished by the next start or projector pass.
CREATE TABLE erasures (
    user_id      text        COLLATE "C" PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT now(),
    erased_by    text        NOT NULL,
    reason       text        NOT NULL,
    delivery_id  text        COLLATE "C" NOT NULL,
    completed_at timestamptz
);

-- The users row of an erased user is a tombstone: id, deleted, erased, times.
ALTER TABLE users ADD COLUMN erased_at timestamptz;

-- The audit access log stays append-only, except that an erasure (which
-- sets ledger.erasing in its transaction) may rewrite an entry's filters,
-- replacing the erased user's emails, names or phone numbers an auditor
-- searched for; nothing else of an entry can change.
-- +goose StatementBegin
CREATE FUNCTION ledger_audit_access_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('ledger.erasing', true) = 'on'
       AND NEW.id = OLD.id AND NEW.at = OLD.at AND NEW.actor = OLD.actor AND NEW.channel = OLD.channel
       AND NEW.action = OLD.action AND NEW.row_count = OLD.row_count THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd
DROP TRIGGER audit_access_append_only ON audit_access;
CREATE TRIGGER audit_access_append_only BEFORE UPDATE OR DELETE ON audit_access
    FOR EACH ROW EXECUTE FUNCTION ledger_audit_access_guard();

-- +goose Down
DROP TRIGGER audit_access_append_only ON audit_access;
CREATE TRIGGER audit_access_append_only BEFORE UPDATE OR DELETE ON audit_access
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
DROP FUNCTION ledger_audit_access_guard();
ALTER TABLE users DROP COLUMN erased_at;
DROP TABLE erasures;
DROP FUNCTION ledger_user_key(text);
DROP TABLE user_keys;
ALTER TABLE events DROP COLUMN body_commitment, DROP COLUMN body_sealed;
