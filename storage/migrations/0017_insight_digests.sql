-- The weekly insights digest: one row per ISO week that got its digest. serve runs as several replicas and
-- each checks whether the digest is due; the one whose INSERT (ON CONFLICT DO NOTHING, in the same transaction
-- as the outbox rows) creates the week's row posts it, the others find the row and post nothing.
CREATE TABLE insight_digests (
    workspace   text NOT NULL REFERENCES workspaces(id),
    week        text NOT NULL,              -- ISO week, e.g. 2026-W48
    clusters    integer NOT NULL,           -- recurring clusters the digest listed
    posted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, week)
);
