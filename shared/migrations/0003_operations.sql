-- Operations (second wave): the audit trail, per-link stats, operator tokens, key names.

-- An API key may carry a name (shown in the audit trail); the prefix stays the fallback.
ALTER TABLE api_keys ADD COLUMN name text CHECK (length(name) BETWEEN 1 AND 200);

-- One row per lifecycle change, written in the same transaction as the change itself.
-- kind: file.uploaded, file.deleted, file.expired, url.created, url.updated, url.revoked,
-- url.expired, url.revoked_with_file. The token is kept cut to 4 characters: enough to
-- correlate with the edge's access log, never enough to replay.
CREATE TABLE audit_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id         bigint NOT NULL REFERENCES teams (id),
    file_id         text NOT NULL REFERENCES files (id),
    kind            text NOT NULL,
    actor_kind      text NOT NULL CHECK (actor_kind IN ('api_key', 'worker')),
    actor_key_id    bigint REFERENCES api_keys (id),
    actor_name      text,
    token_prefix    text CHECK (length(token_prefix) <= 4),
    old_expires_at  timestamptz,
    new_expires_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- Newest first per team, and per file within a team (GET /v1/audit-events).
CREATE INDEX audit_events_team ON audit_events (team_id, id DESC);
CREATE INDEX audit_events_team_file ON audit_events (team_id, file_id, id DESC);
-- The retention sweep deletes by age.
CREATE INDEX audit_events_created ON audit_events (created_at);

-- Per-link stats, folded by the worker from the edges' counts (shared/link_stats.py):
-- totals on the URL row, and per-minute rollups for "top links in a window".
ALTER TABLE public_urls
    ADD COLUMN hits bigint NOT NULL DEFAULT 0,
    ADD COLUMN bytes_sent bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_accessed_at timestamptz;

CREATE TABLE public_url_minutes (
    url_id   bigint NOT NULL REFERENCES public_urls (id),
    team_id  bigint NOT NULL REFERENCES teams (id),
    minute   timestamptz NOT NULL,
    hits     bigint NOT NULL DEFAULT 0,
    bytes    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (url_id, minute)
);
CREATE INDEX public_url_minutes_minute ON public_url_minutes (minute);

-- A folding key's name, recorded in the fold's transaction: a retry never adds twice.
CREATE TABLE link_stats_folds (
    fold_key   text PRIMARY KEY,
    folded_at  timestamptz NOT NULL DEFAULT now()
);

-- Operator tokens for the ops dashboard's JSON API, stored as SHA-256 hashes only.
CREATE TABLE ops_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    token_prefix text NOT NULL,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
