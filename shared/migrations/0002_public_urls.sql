-- One row per token ever issued. A live row has revoked_at IS NULL; at most one per file.
-- expires_at is the effective deadline (own or inherited from the file), NULL = indefinite.
-- version increases on every change so that stale expiry jobs can tell they are stale.
CREATE TABLE public_urls (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id        text NOT NULL REFERENCES files (id),
    team_id        bigint NOT NULL REFERENCES teams (id),
    token          text NOT NULL UNIQUE,
    expires_at     timestamptz,
    inherited      boolean NOT NULL DEFAULT false,
    version        integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoke_reason  text CHECK (revoke_reason IN ('revoked', 'expired', 'deleted'))
);
CREATE UNIQUE INDEX public_urls_one_live_per_file ON public_urls (file_id) WHERE revoked_at IS NULL;
-- Quota counts and the reconcile scan read live rows by team and by deadline.
CREATE INDEX public_urls_team_live ON public_urls (team_id, expires_at) WHERE revoked_at IS NULL;
CREATE INDEX public_urls_live_deadline ON public_urls (expires_at) WHERE revoked_at IS NULL;
