"""Incidents and their transitions: who moved an incident to which state, and when."""
from __future__ import annotations

from typing import Any

import psycopg

OPEN_STATES = ("DETECTED", "ACKNOWLEDGED", "INVESTIGATING", "MITIGATED")


def open_incident(conn: psycopg.Connection, *, title: str, service: str | None, environment: str | None,
                  severity: str, alert_id: int | None, channel: str | None, thread: str | None,
                  actor: str = "warroom", workspace: str = "default") -> int:
    row = conn.execute(
        """INSERT INTO incidents (workspace, title, service, environment, severity, alert_id, channel, thread)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (workspace, title, service, environment, severity, alert_id, channel, thread)).fetchone()
    conn.execute("INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
                 "VALUES (%s, NULL, 'DETECTED', %s, %s)", (row["id"], actor, "opened"))
    return row["id"]


def find_open(conn: psycopg.Connection, *, channel: str, thread: str | None = None,
              workspace: str = "default") -> dict[str, Any] | None:
    """The open incident of a thread, else the latest open incident of the channel."""
    if thread is not None:
        row = conn.execute(
            "SELECT * FROM incidents WHERE workspace = %s AND channel = %s AND thread = %s AND state = ANY(%s) "
            "ORDER BY id DESC LIMIT 1", (workspace, channel, thread, list(OPEN_STATES))).fetchone()
        if row is not None:
            return row
    return conn.execute(
        "SELECT * FROM incidents WHERE workspace = %s AND channel = %s AND state = ANY(%s) ORDER BY id DESC LIMIT 1",
        (workspace, channel, list(OPEN_STATES))).fetchone()


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
    conn.execute("INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
                 "VALUES (%s, %s, %s, %s, %s)", (incident_id, row["old_state"], to, actor, note))
    return row


def note(conn: psycopg.Connection, incident_id: int, *, actor: str, note: str) -> None:
    """A timeline entry that does not change the state (an escalation, a comment)."""
    conn.execute(
        "INSERT INTO incident_transitions (incident_id, from_state, to_state, actor, note) "
        "SELECT id, state, state, %s, %s FROM incidents WHERE id = %s", (actor, note, incident_id))


def timeline(conn: psycopg.Connection, incident_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM incident_transitions WHERE incident_id = %s ORDER BY id",
                        (incident_id,)).fetchall()
