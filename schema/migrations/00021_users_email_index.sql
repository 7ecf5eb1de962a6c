-- +goose Up
-- users_email_idx (lower(email)) served the first email search. The search
-- now reads user_emails (migration 00014: every address a user's events
-- named), and no query reads users by email, so the index only cost every
-- write of a users row (a third of a COPY's time a row). An address too long
-- for an index row (over 2,704 bytes) is now kept: a user event the index
-- refused before stays recorded as poison (projections status) until
-- `ledger projections rebuild users`, which projects it.
DROP INDEX IF EXISTS users_email_idx;

-- +goose Down
-- Only addresses an index row can take: an address too long for one may be
-- stored since the Up.
CREATE INDEX users_email_idx ON users (lower(email)) WHERE email <> '' AND octet_length(email) < 2000;
