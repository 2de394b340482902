-- PagerDuty and Opsgenie events may carry no start time; with NULLs distinct, every repeat of such an alert
-- was a new row (and a new annotation) instead of a counted re-notification.
ALTER TABLE alerts DROP CONSTRAINT alerts_workspace_fingerprint_status_starts_at_key;
ALTER TABLE alerts ADD CONSTRAINT alerts_one_state UNIQUE NULLS NOT DISTINCT (workspace, fingerprint, status, starts_at);
