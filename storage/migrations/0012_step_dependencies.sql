-- Workflow runbooks: a plan step records the keys of the steps it waits for (`needs`; NULL for a step that is
-- not part of a workflow, which runs whenever it is approved) and its parallel group, shown on the card. The
-- step statuses and these edges are the plan's checkpoint: a restarted bot resumes from them.
-- `skipped`: a step a failure elsewhere in its workflow stopped before it started.
ALTER TABLE plan_steps ADD COLUMN needs text[];
ALTER TABLE plan_steps ADD COLUMN parallel_group text;

ALTER TABLE plan_steps DROP CONSTRAINT plan_steps_status_check;
ALTER TABLE plan_steps ADD CONSTRAINT plan_steps_status_check CHECK (status IN
    ('proposed', 'approved', 'queued', 'running', 'succeeded', 'failed', 'rejected', 'refused', 'interrupted',
     'expired', 'skipped'));

-- The sweeper looks for workflow steps approved (or auto-runnable) but not yet queued.
CREATE INDEX plan_steps_waiting ON plan_steps (plan_id) WHERE status IN ('approved', 'proposed') AND needs IS NOT NULL;
