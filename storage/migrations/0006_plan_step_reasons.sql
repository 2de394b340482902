-- Why a model proposed a step (the evidence it points at), shown on the card beside the step so an approver
-- can judge it. Runbook steps have none.
ALTER TABLE plan_steps ADD COLUMN why text;
