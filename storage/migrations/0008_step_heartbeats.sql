-- Liveness of a running step, kept by warroom itself rather than read from RQ's internals: the work horse
-- running a step stamps `heartbeat_at` every few seconds and names itself in `worker` (host:pid), so a
-- sweeper can tell a step whose worker died (SIGKILL, OOM, lost host) from one that is merely slow.
ALTER TABLE plan_steps ADD COLUMN heartbeat_at timestamptz;
ALTER TABLE plan_steps ADD COLUMN worker text;
-- The sweeper looks only at running and queued steps; keep that cheap however long the history grows.
CREATE INDEX plan_steps_in_flight ON plan_steps (status) WHERE status IN ('queued', 'running');
