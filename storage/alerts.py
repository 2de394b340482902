"""Alerts and changes."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg


def insert_alert(conn: psycopg.Connection, *, alert: dict[str, Any], workspace: str = "default") -> tuple[int, bool]:
    """Store one normalised alert; a re-notification of the same state bumps its counter.

    Returns (alert id, True when this is a new alert state).
    """
    row = conn.execute(
        """INSERT INTO alerts (workspace, source, fingerprint, status, name, severity, service,
                               environment, group_key, payload, starts_at, ends_at)
           VALUES (%(ws)s, %(source)s, %(fingerprint)s, %(status)s, %(name)s, %(severity)s, %(service)s,
                   %(environment)s, %(group_key)s, %(payload)s::jsonb, %(starts_at)s, %(ends_at)s)
           ON CONFLICT (workspace, fingerprint, status, starts_at)
           DO UPDATE SET notifications = alerts.notifications + 1, payload = EXCLUDED.payload
           RETURNING id, (xmax = 0) AS inserted""",
        {"ws": workspace, **alert, "payload": json.dumps(alert, default=str)}).fetchone()
    return row["id"], row["inserted"]


def latest_for_fingerprint(conn: psycopg.Connection, fingerprint: str, *,
                           workspace: str = "default") -> dict[str, Any] | None:
    """The newest stored state (firing or resolved) of an alert."""
    return conn.execute("SELECT * FROM alerts WHERE workspace = %s AND fingerprint = %s ORDER BY id DESC LIMIT 1",
                        (workspace, fingerprint)).fetchone()


def bump_notifications(conn: psycopg.Connection, alert_id: int) -> None:
    conn.execute("UPDATE alerts SET notifications = notifications + 1 WHERE id = %s", (alert_id,))


def get_alert(conn: psycopg.Connection, alert_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM alerts WHERE id = %s", (alert_id,)).fetchone()


def pending_alerts(conn: psycopg.Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT * FROM alerts WHERE annotated_at IS NULL ORDER BY id LIMIT %s", (limit,)).fetchall()


def mark_annotated(conn: psycopg.Connection, alert_id: int) -> bool:
    """Claim the annotation of an alert; False when someone already did (never annotate twice)."""
    row = conn.execute("UPDATE alerts SET annotated_at = now() WHERE id = %s AND annotated_at IS NULL "
                       "RETURNING id", (alert_id,)).fetchone()
    return row is not None


def related_alerts(conn: psycopg.Connection, *, service: str | None, exclude_id: int | None,
                   since: datetime, workspace: str = "default", limit: int = 10) -> list[dict[str, Any]]:
    if not service:
        return []
    return conn.execute(
        """SELECT id, name, status, severity, service, received_at, payload FROM alerts
           WHERE workspace = %s AND service = %s AND received_at >= %s AND id IS DISTINCT FROM %s
           ORDER BY received_at DESC LIMIT %s""",
        (workspace, service, since, exclude_id, limit)).fetchall()


def insert_change(conn: psycopg.Connection, *, change: dict[str, Any], workspace: str = "default") -> int:
    row = conn.execute(
        """INSERT INTO changes (workspace, service, kind, summary, version, author, at, source)
           VALUES (%(ws)s, %(service)s, %(kind)s, %(summary)s, %(version)s, %(author)s, %(at)s, %(source)s)
           RETURNING id""",
        {"ws": workspace, "source": None, **change}).fetchone()
    return row["id"]


def recent_changes(conn: psycopg.Connection, *, service: str | None, since: datetime, until: datetime,
                   workspace: str = "default", limit: int = 20) -> list[dict[str, Any]]:
    return conn.execute(
        """SELECT * FROM changes WHERE workspace = %s AND at BETWEEN %s AND %s
           AND (%s::text IS NULL OR service = %s) ORDER BY at DESC LIMIT %s""",
        (workspace, since, until, service, service, limit)).fetchall()


def record_external_change(conn: psycopg.Connection, *, change: dict[str, Any], external_id: str,
                           workspace: str = "default") -> tuple[int, bool]:
    """Store a change the sender identifies (a GitHub deployment): a redelivery or a later status of the same
    deployment updates its one row. `at` keeps the earliest report (when the environment started changing);
    the rest follows the newest report, so a status delivered out of order never overwrites a newer one.
    Returns (change id, True when the row is new)."""
    row = conn.execute(
        """INSERT INTO changes (workspace, service, kind, summary, version, author, at, source, external_id,
                                reported_at)
           VALUES (%(ws)s, %(service)s, %(kind)s, %(summary)s, %(version)s, %(author)s, %(at)s, %(source)s,
                   %(external_id)s, %(at)s)
           ON CONFLICT (workspace, external_id) WHERE external_id IS NOT NULL DO UPDATE SET
               at = LEAST(changes.at, EXCLUDED.at),
               summary = CASE WHEN EXCLUDED.reported_at >= changes.reported_at THEN EXCLUDED.summary
                              ELSE changes.summary END,
               version = CASE WHEN EXCLUDED.reported_at >= changes.reported_at THEN EXCLUDED.version
                              ELSE changes.version END,
               author = coalesce(changes.author, EXCLUDED.author),
               source = CASE WHEN EXCLUDED.reported_at >= changes.reported_at THEN EXCLUDED.source
                             ELSE changes.source END,
               reported_at = GREATEST(changes.reported_at, EXCLUDED.reported_at)
           RETURNING id, (xmax = 0) AS inserted""",
        {"ws": workspace, "source": None, **change, "external_id": external_id}).fetchone()
    return row["id"], row["inserted"]
