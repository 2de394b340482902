"""What insights reads: recent incidents with their alerts, times and manual steps, their precedent vectors,
and the weekly digest's one-row-per-week guard."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import psycopg


def incidents_since(conn: psycopg.Connection, since: datetime, *, workspace: str = "default") -> list[dict[str, Any]]:
    """Incidents detected since `since`, each with `alerts` [(fingerprint, name, service)] and `manual_steps`
    [(title, connector)]: the steps of its plans that a human approved and that then ran; `succeeded_steps`: how
    many of its steps succeeded (a runbook can only be drafted from an incident with one)."""
    rows = conn.execute(
        """SELECT i.id, i.title, i.service, i.state, i.created_at AS detected_at,
                  (SELECT min(t.at) FROM incident_transitions t
                    WHERE t.incident_id = i.id AND t.to_state = 'ACKNOWLEDGED') AS acked_at,
                  (SELECT min(t.at) FROM incident_transitions t
                    WHERE t.incident_id = i.id AND t.to_state = 'RESOLVED') AS resolved_at,
                  (SELECT m.permalink FROM chat_messages m WHERE m.key = i.thread AND m.permalink IS NOT NULL
                    LIMIT 1) AS link
           FROM incidents i WHERE i.workspace = %s AND i.created_at >= %s ORDER BY i.id""",
        (workspace, since)).fetchall()
    ids = [r["id"] for r in rows]
    alerts: dict[int, list[tuple]] = {}
    for a in conn.execute(
            """SELECT DISTINCT i.id AS incident_id, a.fingerprint, a.name, a.service
               FROM incidents i
               JOIN alerts a ON a.id = i.alert_id
                             OR a.group_id IN (SELECT g.id FROM alert_groups g WHERE g.incident_id = i.id)
               WHERE i.id = ANY(%s) ORDER BY 1, 2, 3""", (ids,)):
        alerts.setdefault(a["incident_id"], []).append((a["fingerprint"], a["name"], a["service"]))
    steps: dict[int, list[tuple]] = {}
    for s in conn.execute(
            """SELECT DISTINCT i.id AS incident_id, s.id AS step_id, s.title, s.connector
               FROM incidents i
               JOIN plans p ON p.incident_id = i.id OR (i.alert_id IS NOT NULL AND p.alert_id = i.alert_id)
               JOIN plan_steps s ON s.plan_id = p.id
               WHERE i.id = ANY(%s) AND s.status IN ('succeeded', 'failed')
                 AND EXISTS (SELECT 1 FROM approvals a WHERE a.step_id = s.id AND a.decision = 'approve'
                             AND a.actor <> 'warroom')
               ORDER BY 1, 2""", (ids,)):
        steps.setdefault(s["incident_id"], []).append((s["title"], s["connector"]))
    succeeded = {r["incident_id"]: r["n"] for r in conn.execute(
        """SELECT i.id AS incident_id, count(DISTINCT s.id) AS n
           FROM incidents i
           JOIN plans p ON p.incident_id = i.id OR (i.alert_id IS NOT NULL AND p.alert_id = i.alert_id)
           JOIN plan_steps s ON s.plan_id = p.id AND s.status = 'succeeded'
           WHERE i.id = ANY(%s) GROUP BY i.id""", (ids,))}
    return [{**r, "alerts": alerts.get(r["id"], []), "manual_steps": steps.get(r["id"], []),
             "succeeded_steps": succeeded.get(r["id"], 0)} for r in rows]


def incident_vectors(conn: psycopg.Connection, incident_ids: list[int], *,
                     workspace: str = "default") -> dict[int, np.ndarray]:
    """The embedding of each resolved incident's precedent document (`incident:<id>`, its first chunk)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (d.id) (d.metadata->>'incident_id')::bigint AS incident_id, c.embedding
           FROM documents d JOIN chunks c ON c.document_id = d.id
           WHERE d.workspace = %s AND d.source_type = 'incident' AND d.source = ANY(%s)
           ORDER BY d.id, c.ordinal""",
        (workspace, [f"incident:{i}" for i in incident_ids])).fetchall()
    return {r["incident_id"]: np.asarray(r["embedding"].to_numpy(), dtype=np.float32) for r in rows}


def last_digest_week(conn: psycopg.Connection, *, workspace: str = "default") -> str | None:
    row = conn.execute("SELECT max(week) AS week FROM insight_digests WHERE workspace = %s",
                       (workspace,)).fetchone()
    return row["week"]


def claim_digest_week(conn: psycopg.Connection, week: str, *, clusters: int, workspace: str = "default") -> bool:
    """True for the one caller (replica) that records this week's digest; call it in the transaction that
    enqueues the digest, so a replica that loses the race enqueues nothing."""
    row = conn.execute(
        """INSERT INTO insight_digests (workspace, week, clusters) VALUES (%s, %s, %s)
           ON CONFLICT (workspace, week) DO NOTHING RETURNING week""", (workspace, week, clusters)).fetchone()
    return row is not None
