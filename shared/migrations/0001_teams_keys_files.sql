-- Teams own files; API keys belong to a team and are stored as SHA-256 hashes only.
CREATE TABLE teams (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id     bigint NOT NULL REFERENCES teams (id),
    key_hash    bytea NOT NULL UNIQUE,
    key_prefix  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_team ON api_keys (team_id);

-- A file row is soft-deleted (deleted_at) so that the event consumer and the sweep can
-- tell "deleted, object still to remove" from "never existed"; object_deleted_at closes it.
CREATE TABLE files (
    id                 text PRIMARY KEY,
    team_id            bigint NOT NULL REFERENCES teams (id),
    filename           text NOT NULL,
    purpose            text NOT NULL DEFAULT '',
    bytes              bigint NOT NULL CHECK (bytes >= 0),
    content_type       text NOT NULL,
    sniffed_type       text,
    sha256             bytea NOT NULL,
    object_key         text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    deleted_at         timestamptz,
    delete_reason      text CHECK (delete_reason IN ('deleted', 'expired')),
    object_deleted_at  timestamptz
);
-- Keyset pagination per sort order, live files only (100k files per team stay fast).
CREATE INDEX files_team_created  ON files (team_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX files_team_filename ON files (team_id, filename, id)   WHERE deleted_at IS NULL;
CREATE INDEX files_team_bytes    ON files (team_id, bytes, id)      WHERE deleted_at IS NULL;
-- The worker's scans: files due to expire, deleted files whose object is still there.
CREATE INDEX files_expiring ON files (expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX files_object_pending ON files (deleted_at) WHERE deleted_at IS NOT NULL AND object_deleted_at IS NULL;
