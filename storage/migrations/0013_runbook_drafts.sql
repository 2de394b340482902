-- Runbook drafts written from resolved incidents (`/warroom learn`). A draft is a proposal, never an active
-- runbook: nothing reads this table to plan or retrieve. Approving one writes a new `runbooks` version whose
-- parent_version_id (there since 0001) is the draft's base version; an edit is a new revision row, the one it
-- replaces marked superseded.
CREATE TABLE runbook_drafts (
    id                bigserial PRIMARY KEY,
    workspace         text NOT NULL REFERENCES workspaces(id),
    incident_id       bigint NOT NULL REFERENCES incidents(id),
    runbook_id        text NOT NULL,                        -- metadata.id of the proposed runbook
    yaml              text NOT NULL,
    citations         jsonb NOT NULL DEFAULT '[]',
    base_version_id   bigint REFERENCES runbooks(id),       -- the version this draft updates; NULL: a new runbook
    revision_of       bigint REFERENCES runbook_drafts(id), -- the draft an edit replaced
    status            text NOT NULL DEFAULT 'proposed'
                      CHECK (status IN ('proposed', 'approved', 'rejected', 'superseded')),
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    decided_by        text,
    decided_at        timestamptz,
    version_id        bigint REFERENCES runbooks(id),       -- the version approval created
    platform          text,
    channel           text,
    thread            text
);
CREATE INDEX runbook_drafts_incident ON runbook_drafts (incident_id, id);
