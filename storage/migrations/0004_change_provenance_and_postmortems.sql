-- Changes carry their provenance (a CI run, a deploy log) so every fact shown in a thread says where it came from.
ALTER TABLE changes ADD COLUMN source text;
-- The sender's own id for a change (GitHub deployment id): a redelivery or the next status of the same deployment
-- updates one row instead of adding a second "recent deploy" to the evidence.
ALTER TABLE changes ADD COLUMN external_id text;
-- When the sender last reported on it, so a status delivered out of order never overwrites a newer one.
ALTER TABLE changes ADD COLUMN reported_at timestamptz;
CREATE UNIQUE INDEX changes_external_id ON changes (workspace, external_id) WHERE external_id IS NOT NULL;

-- The audit entry written with each incident transition, so summaries cite the exact audit id.
ALTER TABLE incident_transitions ADD COLUMN audit_id bigint;

-- Postmortem drafts posted on resolve: the card as posted and its text, newest last.
CREATE TABLE incident_postmortems (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents(id),
    workspace   text NOT NULL REFERENCES workspaces(id),
    author      text NOT NULL,
    root_cause  text,
    card        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incident_postmortems_incident ON incident_postmortems (incident_id, id);
