"""Incidents and their transitions: who moved an incident to which state, and when."""
from __future__ import annotations

import json
from typing import Any

import psycopg

from storage import audit

# engine.lifecycle.OPEN (storage imports nothing above it; a test keeps the two equal) and the predicate of
# the incidents_one_open_per_thread index (migration 0010).
OPEN_STATES = ("DETECTED", "ACKNOWLEDGED", "INVESTIGATING", "MITIGATED", "INCONCLUSIVE")
_ONE_OPEN_PER_THREAD = ("thread IS NOT NULL AND state IN "
                        "('DETECTED', 'ACKNOWLEDGED', 'INVESTIGATING', 'MITIGATED', 'INCONCLUSIVE')")


def open_incident(conn: psycopg.Connection, *, title: str, service: str | None, environment: str | None,
                  severity: str, alert_id: int | None, channel: str | None, thread: str | None,
                  actor: str = "warroom", workspace: str = "default") -> int:
    """Open an incident for a thread, or return the one already open there: one open incident per thread,
    however many alerts of its group fire and however many replicas annotate them at once (a unique index
    decides the race). Closed incidents do not count, so a recurrence after resolve opens a new one."""
    row = conn.execute(
        f"""INSERT INTO incidents (workspace, title, service, environment, severity, alert_id, channel, thread)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (workspace, channel, thread) WHERE {_ONE_OPEN_PER_THREAD} DO NOTHING RETURNING id""",
        (workspace, title, service, environment, severity, alert_id, channel, thread)).fetchone()
    if row is None:
        return conn.execute(f"SELECT id FROM incidents WHERE workspace = %s AND channel = %s AND thread = %s "
                            f"AND {_ONE_OPEN_PER_THREAD}", (workspace, channel, thread)).fetchone()["id"]
    opened = conn.execute("INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
                          "VALUES (%s, NULL, 'DETECTED', %s, %s) RETURNING id", (row["id"], actor, "opened")).fetchone()
    # Every transition is audited, the first one too, so a summary's DETECTED line cites its audit id.
    audit_id = audit.append(conn, actor=actor, action="incident.opened", subject=f"incident:{row['id']}",
                            detail={"alert_id": alert_id, "severity": severity, "service": service},
                            workspace=workspace)
    link_audit(conn, opened["id"], audit_id)
    return row["id"]


def find_open(conn: psycopg.Connection, *, channel: str, thread: str | None = None,
              workspace: str = "default", states: tuple[str, ...] | list[str] = OPEN_STATES) -> dict[str, Any] | None:
    """The latest incident of a thread in one of `states` (open ones by default), else the channel's latest."""
    if thread is not None:
        row = conn.execute(
            "SELECT * FROM incidents WHERE workspace = %s AND channel = %s AND thread = %s AND state = ANY(%s) "
            "ORDER BY id DESC LIMIT 1", (workspace, channel, thread, list(states))).fetchone()
        if row is not None:
            return row
    return conn.execute(
        "SELECT * FROM incidents WHERE workspace = %s AND channel = %s AND state = ANY(%s) ORDER BY id DESC LIMIT 1",
        (workspace, channel, list(states))).fetchone()


def in_thread(conn: psycopg.Connection, *, channel: str, thread: str, workspace: str = "default",
              states: tuple[str, ...] | list[str] = OPEN_STATES) -> dict[str, Any] | None:
    """The incident of exactly this thread (no channel fallback): what automatic moves may touch."""
    return conn.execute(
        "SELECT * FROM incidents WHERE workspace = %s AND channel = %s AND thread = %s AND state = ANY(%s) "
        "ORDER BY id DESC LIMIT 1", (workspace, channel, thread, list(states))).fetchone()


def for_plan(conn: psycopg.Connection, plan: dict[str, Any], *,
             states: tuple[str, ...] | list[str] = OPEN_STATES) -> dict[str, Any] | None:
    """The incident a plan belongs to: the plan names it, was proposed for its alert, or in its thread (by
    logical key, or by the platform id of the message the bot posted under that key)."""
    return conn.execute(
        """SELECT i.* FROM incidents i
           WHERE i.workspace = %(ws)s AND i.state = ANY(%(states)s)
             AND (i.id = %(incident)s::bigint OR i.alert_id = %(alert)s::bigint OR i.thread = %(thread)s::text
                  OR i.thread IN (SELECT key FROM chat_messages WHERE message_id = %(thread)s::text))
           ORDER BY i.id DESC LIMIT 1""",
        {"ws": plan["workspace"], "states": list(states), "incident": plan.get("incident_id"),
         "alert": plan.get("alert_id"), "thread": plan.get("thread")}).fetchone()


def transition(conn: psycopg.Connection, incident_id: int, *, from_: list[str], to: str, actor: str,
               note: str | None = None) -> dict[str, Any] | None:
    """Move an incident only from one of `from_`; the transition row says who and when. None if not allowed."""
    row = conn.execute(
        """UPDATE incidents i SET state = %s, updated_at = now()
           FROM (SELECT id, state AS old_state FROM incidents WHERE id = %s FOR UPDATE) old
           WHERE i.id = old.id AND old.old_state = ANY(%s) RETURNING i.*, old.old_state""",
        (to, incident_id, from_)).fetchone()
    if row is None:
        return None
    entry = conn.execute("INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
                         "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                         (incident_id, row["old_state"], to, actor, note)).fetchone()
    return {**row, "transition_id": entry["id"]}


def advance(conn: psycopg.Connection, incident_id: int, *, from_: list[str], to: str, actor: str,
            note: str | None = None, workspace: str = "default", **detail: Any) -> dict[str, Any] | None:
    """A guarded transition with its audit entry (`incident.<state>`), linked so summaries cite it."""
    moved = transition(conn, incident_id, from_=from_, to=to, actor=actor, note=note)
    if moved is not None:
        audit_id = audit.append(conn, actor=actor, action=f"incident.{to.lower()}", subject=f"incident:{incident_id}",
                                detail={"from": moved["old_state"], "note": note, **detail}, workspace=workspace)
        link_audit(conn, moved["transition_id"], audit_id)
    return moved


def note(conn: psycopg.Connection, incident_id: int, *, actor: str, note: str) -> int:
    """A timeline entry that does not change the state (an escalation, a comment); returns its id."""
    return conn.execute(
        "INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
        "SELECT id, state, state, %s, %s FROM incidents WHERE id = %s RETURNING id",
        (actor, note, incident_id)).fetchone()["id"]


def link_audit(conn: psycopg.Connection, transition_id: int, audit_id: int) -> None:
    """Remember which audit entry records a timeline entry, so summaries cite it."""
    conn.execute("UPDATE incident_transitions SET audit_id = %s WHERE id = %s", (audit_id, transition_id))


def timeline(conn: psycopg.Connection, incident_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM incident_transitions WHERE incident_id = %s ORDER BY id",
                        (incident_id,)).fetchall()


def get(conn: psycopg.Connection, incident_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,)).fetchone()


# --- what summaries cite --------------------------------------------------------------------------------


def thread_messages(conn: psycopg.Connection, keys: list[str]) -> list[dict[str, Any]]:
    """The platform messages the bot posted under these logical keys (alert:12, plan:7)."""
    return conn.execute("SELECT * FROM chat_messages WHERE key = ANY(%s) ORDER BY created_at",
                        (keys,)).fetchall()


def plans_for(conn: psycopg.Connection, *, alert_id: int | None, threads: list[str],
              workspace: str = "default") -> list[dict[str, Any]]:
    """Plans proposed for the incident: on its alert, or in its thread (by key or platform message id)."""
    return conn.execute(
        "SELECT id, title, source, requested_by, message_key, created_at FROM plans "
        "WHERE workspace = %s AND (alert_id = %s OR thread = ANY(%s)) ORDER BY id",
        (workspace, alert_id, threads)).fetchall()


def steps_for(conn: psycopg.Connection, plan_ids: list[int]) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT s.id, s.plan_id, s.key, s.title, s.connector, s.target, s.risk, s.status, s.refusal, s.result,
                  s.started_at, s.finished_at,
                  (SELECT a.actor FROM approvals a WHERE a.step_id = s.id ORDER BY a.id DESC LIMIT 1) AS decided_by
           FROM plan_steps s WHERE s.plan_id = ANY(%s) ORDER BY s.plan_id, s.ordinal""", (plan_ids,)).fetchall()


def annotations_for(conn: psycopg.Connection, *, keys: list[str], threads: list[str]) -> list[dict[str, Any]]:
    """Annotation cards posted in the incident's thread (hypotheses with their confidence), oldest first."""
    return conn.execute(
        """SELECT id, platform, channel, message_key, card, created_at FROM outbox
           WHERE op = 'post' AND card->>'kind' = 'annotation'
             AND (thread_key = ANY(%s) OR thread_id = ANY(%s) OR message_key = ANY(%s)) ORDER BY id""",
        (keys, threads, keys)).fetchall()


def audit_for(conn: psycopg.Connection, subjects: list[str]) -> list[dict[str, Any]]:
    return conn.execute("SELECT id, at, actor, action, subject, detail FROM audit_log WHERE subject = ANY(%s) "
                        "ORDER BY id", (subjects,)).fetchall()


def save_postmortem(conn: psycopg.Connection, *, incident_id: int, author: str, root_cause: str | None,
                    card: dict[str, Any], workspace: str = "default") -> int:
    return conn.execute(
        "INSERT INTO incident_postmortems (incident_id, workspace, author, root_cause, card) "
        "VALUES (%s, %s, %s, %s, %s::jsonb) RETURNING id",
        (incident_id, workspace, author, root_cause, json.dumps(card, default=str))).fetchone()["id"]


def latest_postmortem(conn: psycopg.Connection, incident_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM incident_postmortems WHERE incident_id = %s ORDER BY id DESC LIMIT 1",
                        (incident_id,)).fetchone()


# --- what /metrics reports (read at scrape time, so every replica and worker's transitions count) ----------


def durations(conn: psycopg.Connection, *, to_state: str, buckets: list[float],
              workspace: str = "default") -> list[dict[str, Any]]:
    """Seconds from detection to the first move into `to_state`, as histogram rows per severity:
    {severity, le, le_count, n, total} for every bucket bound `le` (cumulative, like Prometheus)."""
    return conn.execute(
        """WITH d AS (
               SELECT i.severity, EXTRACT(EPOCH FROM min(t.at) - i.created_at)::float8 AS secs
               FROM incidents i JOIN incident_transitions t ON t.incident_id = i.id
               WHERE i.workspace = %s AND t.to_state = %s AND t.from_state IS DISTINCT FROM t.to_state
               GROUP BY i.id, i.severity, i.created_at)
           SELECT d.severity, b.le, count(*) FILTER (WHERE d.secs <= b.le) AS le_count, count(*) AS n,
                  sum(d.secs) AS total
           FROM d CROSS JOIN unnest(%s::float8[]) AS b(le)
           GROUP BY d.severity, b.le ORDER BY d.severity, b.le""",
        (workspace, to_state, buckets)).fetchall()


def count_by_state(conn: psycopg.Connection, *, workspace: str = "default") -> dict[str, int]:
    return {r["state"]: r["n"] for r in conn.execute(
        "SELECT state, count(*) AS n FROM incidents WHERE workspace = %s GROUP BY state", (workspace,))}
