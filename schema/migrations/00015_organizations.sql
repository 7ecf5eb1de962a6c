-- +goose Up
-- organizations and organization_memberships are the read models built by
-- the organizations projector (projections package) from organization.* and
-- organizationMembership.* events. No foreign key between them: events
-- arrive in any order, and a membership may be projected before its
-- organization. members_count is the number of memberships of the
-- organization that are not deleted (0 once the organization is deleted),
-- recounted by the projector in the batch that changes them.
CREATE TABLE organizations (
    id                  text        COLLATE "C" PRIMARY KEY,
    name                text        NOT NULL DEFAULT '',
    slug                text        NOT NULL DEFAULT '',
    image_url           text        NOT NULL DEFAULT '',
    members_count       bigint      NOT NULL DEFAULT 0,
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
CREATE INDEX organizations_slug_idx ON organizations (slug) WHERE slug <> '';

CREATE TABLE organization_memberships (
    id                  text        COLLATE "C" PRIMARY KEY,
    organization_id     text        COLLATE "C" NOT NULL DEFAULT '',
    user_id             text        COLLATE "C" NOT NULL DEFAULT '',
    role                text        NOT NULL DEFAULT '',
    permissions         jsonb       NOT NULL DEFAULT '[]',
    created_at          timestamptz,
    updated_at          timestamptz,
    deleted             boolean     NOT NULL DEFAULT false,
    deleted_at          timestamptz,
    version_updated_at  bigint      NOT NULL DEFAULT 0,
    version_occurred_at bigint      NOT NULL DEFAULT 0,
    version_delivery_id text        COLLATE "C" NOT NULL DEFAULT '',
    last_position       bigint      NOT NULL DEFAULT 0
);
CREATE INDEX organization_memberships_user_idx ON organization_memberships (user_id);
CREATE INDEX organization_memberships_organization_idx ON organization_memberships (organization_id);

-- +goose Down
DROP TABLE organization_memberships;
DROP TABLE organizations;
