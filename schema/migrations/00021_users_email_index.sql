-- +goose Up
-- users_email_idx (lower(email)) served the first email search. The search
-- now reads user_emails (migration 00014: every address a user's events
-- named), and no query reads users by email, so the index only cost every
-- write of a users row (a third of a COPY's time a row).
DROP INDEX IF EXISTS users_email_idx;

-- +goose Down
CREATE INDEX users_email_idx ON users (lower(email)) WHERE email <> '';
