-- One open incident per thread: an alert group (or the same alert re-annotated by another replica) that
-- fires again while its incident is open joins that incident instead of opening a second one. Closed
-- incidents (RESOLVED, LEARNED) leave the index, so a recurrence after resolve opens a new incident.
-- The state list is storage.incidents.OPEN_STATES (= engine.lifecycle.OPEN).
CREATE UNIQUE INDEX incidents_one_open_per_thread ON incidents (workspace, channel, thread)
    WHERE thread IS NOT NULL
      AND state IN ('DETECTED', 'ACKNOWLEDGED', 'INVESTIGATING', 'MITIGATED', 'INCONCLUSIVE');

-- Timelines and the MTTA/MTTR collector read transitions by incident and target state.
CREATE INDEX incident_transitions_incident ON incident_transitions (incident_id, id);
CREATE INDEX incident_transitions_to_state ON incident_transitions (to_state, incident_id);
