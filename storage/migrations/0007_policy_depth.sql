-- Policy depth: the service a plan acts on (approver rules, rate limits), approvals bound to a person
-- (two-person rule), expired steps, and emergency freezes set from chat.
ALTER TABLE plans ADD COLUMN service text;
CREATE INDEX plans_service_idx ON plans (workspace, service);

-- `identity` is who approved as a person (email or UPN when known, else platform:id), so the same human on
-- Slack and Teams counts once; `reason` is the policy's explanation.
ALTER TABLE approvals ADD COLUMN identity text;
ALTER TABLE approvals ADD COLUMN reason text;

ALTER TABLE plan_steps DROP CONSTRAINT plan_steps_status_check;
ALTER TABLE plan_steps ADD CONSTRAINT plan_steps_status_check CHECK (status IN
    ('proposed', 'approved', 'queued', 'running', 'succeeded', 'failed', 'rejected', 'refused', 'interrupted',
     'expired'));
CREATE INDEX plan_steps_recent_changes_idx ON plan_steps (queued_at) WHERE risk <> 'read_only';

-- `/warroom freeze [service]`: an emergency stop for state changes until `/warroom unfreeze`.
CREATE TABLE freezes (
    id         bigserial PRIMARY KEY,
    workspace  text NOT NULL REFERENCES workspaces(id),
    service    text,                         -- NULL: every service
    reason     text NOT NULL DEFAULT '',
    frozen_by  text NOT NULL,
    frozen_at  timestamptz NOT NULL DEFAULT now(),
    lifted_by  text,
    lifted_at  timestamptz
);
CREATE UNIQUE INDEX freezes_one_active_per_scope ON freezes (workspace, coalesce(service, '')) WHERE lifted_at IS NULL;

-- Execution follow-ups: a step may declare a read-only `verify` check that runs after it; a failed step's
-- rollback becomes a step of its own (kind 'rollback', pointing at the step it undoes).
ALTER TABLE plan_steps ADD COLUMN verify jsonb;
ALTER TABLE plan_steps ADD COLUMN kind text NOT NULL DEFAULT 'step' CHECK (kind IN ('step', 'rollback'));
ALTER TABLE plan_steps ADD COLUMN parent_step_id bigint REFERENCES plan_steps(id);
CREATE UNIQUE INDEX plan_steps_one_rollback ON plan_steps (parent_step_id) WHERE kind = 'rollback';
