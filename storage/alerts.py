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


# --- groups and storms -----------------------------------------------------------------------------------


def group_key_of(alert: dict[str, Any]) -> str:
    """Which group an alert belongs to: Alertmanager's groupKey (its group_by labels) split by alert name,
    so one parent card speaks of one kind of alert; without a groupKey, our own grouping by source, alert
    name, service and environment."""
    if alert.get("group_key"):
        return f"{alert['source']}|{alert['group_key']}|{alert['name']}"
    return "|".join(str(alert.get(k) or "") for k in ("source", "name", "service", "environment"))


def open_group(conn: psycopg.Connection, key: str, *, window_minutes: float,
               workspace: str = "default") -> tuple[int, bool]:
    """The open group of `key`, locked for the caller's transaction, or a new one: (id, True when new).

    Called before the notification's alerts are written, so every writer of a group (webhooks, annotator)
    takes the group's row lock first and then alert rows: no lock-order deadlock. A group that saw no
    activity within the window is closed and a new one opened. Concurrent webhooks for one key meet on the
    partial unique index (ON CONFLICT): never two open groups."""
    conn.execute(
        """UPDATE alert_groups SET closed_at = now()
           WHERE workspace = %s AND group_key = %s AND closed_at IS NULL
             AND last_alert_at < now() - make_interval(secs => %s)""", (workspace, key, window_minutes * 60))
    row = conn.execute(
        """INSERT INTO alert_groups (workspace, group_key) VALUES (%s, %s)
           ON CONFLICT (workspace, group_key) WHERE closed_at IS NULL
           DO UPDATE SET last_alert_at = now() RETURNING id, (xmax = 0) AS created""", (workspace, key)).fetchone()
    return row["id"], row["created"]


def attach(conn: psycopg.Connection, group_id: int, alert_ids: list[int]) -> None:
    """New alert states join the group (the first one names its parent message)."""
    conn.execute("UPDATE alerts SET group_id = %s WHERE id = ANY(%s)", (group_id, alert_ids))
    conn.execute("UPDATE alert_groups SET first_alert_id = coalesce(first_alert_id, %s) WHERE id = %s",
                 (min(alert_ids), group_id))


def drop_empty_group(conn: psycopg.Connection, group_id: int) -> None:
    """A notification that only repeated known alerts opened a group for nothing: take it back."""
    conn.execute("DELETE FROM alert_groups WHERE id = %s AND first_alert_id IS NULL", (group_id,))


def pending_work(conn: psycopg.Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    """What the annotator has to do, oldest first: one row per group with unannotated alerts (`group_id`),
    and one per unannotated alert outside any group (`alert_id`: alerts another integration posted)."""
    return conn.execute(
        """SELECT group_id, CASE WHEN group_id IS NULL THEN id END AS alert_id, min(id) AS first
           FROM alerts WHERE annotated_at IS NULL
           GROUP BY group_id, CASE WHEN group_id IS NULL THEN id END ORDER BY first LIMIT %s""",
        (limit,)).fetchall()


def get_group(conn: psycopg.Connection, group_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    """The group; with `lock`, locked for this transaction, or None while another annotator holds it."""
    suffix = " FOR UPDATE SKIP LOCKED" if lock else ""
    return conn.execute(f"SELECT * FROM alert_groups WHERE id = %s{suffix}", (group_id,)).fetchone()


def group_states(conn: psycopg.Connection, group_id: int) -> list[dict[str, Any]]:
    """Each alert of the group in its newest state (one row per fingerprint), oldest alert first."""
    return conn.execute(
        """SELECT * FROM (SELECT DISTINCT ON (fingerprint) * FROM alerts WHERE group_id = %s
                          ORDER BY fingerprint, id DESC) latest ORDER BY id""", (group_id,)).fetchall()


def first_firing(conn: psycopg.Connection, group_id: int) -> dict[str, Any] | None:
    """The group's first firing alert state (even if resolved since): what its investigation is about."""
    return conn.execute("SELECT * FROM alerts WHERE group_id = %s AND status = 'firing' ORDER BY id LIMIT 1",
                        (group_id,)).fetchone()


def claim_group_alerts(conn: psycopg.Connection, group_id: int) -> list[int]:
    """Mark the group's unannotated alerts annotated; their effect is published in the same transaction."""
    rows = conn.execute("UPDATE alerts SET annotated_at = now() WHERE group_id = %s AND annotated_at IS NULL "
                        "RETURNING id", (group_id,)).fetchall()
    return [r["id"] for r in rows]


def update_group(conn: psycopg.Connection, group_id: int, **fields: Any) -> None:
    """Set columns of a group; the names come from this module's callers, never from input."""
    assignments = ", ".join(f"{name} = %({name})s" for name in fields)
    conn.execute(f"UPDATE alert_groups SET {assignments} WHERE id = %(id)s", {**fields, "id": group_id})


def place_group(conn: psycopg.Connection, group_id: int, *, platform: str, channel: str, threshold: int,
                budget: int, window_minutes: float, workspace: str = "default") -> dict[str, Any]:
    """Decide once where a new group is shown: its own parent, or a line in the channel's storm summary when
    more than `threshold` groups were placed there in the last minute. A storm group is investigated only
    while the storm's budget lasts. Serialised per channel (advisory lock) so replicas agree on the count."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"alert-storm:{workspace}:{platform}:{channel}",))
    recent = conn.execute(
        """SELECT count(*) AS n FROM alert_groups WHERE workspace = %s AND platform = %s AND channel = %s
           AND placed_at > now() - interval '1 minute'""", (workspace, platform, channel)).fetchone()["n"]
    fields: dict[str, Any] = {"platform": platform, "channel": channel, "placed_at": datetime.now().astimezone()}
    if recent < threshold:
        fields.update(placement="parent", investigate=True)
    else:
        storm_id = _current_storm(conn, platform=platform, channel=channel, window_minutes=window_minutes,
                                  workspace=workspace)
        used = conn.execute("SELECT count(*) AS n FROM alert_groups WHERE storm_id = %s AND investigate",
                            (storm_id,)).fetchone()["n"]
        fields.update(placement="storm", storm_id=storm_id, investigate=used < budget)
    update_group(conn, group_id, **fields)
    return {**(get_group(conn, group_id) or {}), **fields}


def _current_storm(conn: psycopg.Connection, *, platform: str, channel: str, window_minutes: float,
                   workspace: str) -> int:
    """The channel's storm still in progress (active within the grouping window), or a new one."""
    row = conn.execute(
        """UPDATE alert_storms SET last_at = now() WHERE id = (
               SELECT id FROM alert_storms WHERE workspace = %s AND platform = %s AND channel = %s
               AND last_at > now() - make_interval(secs => %s) ORDER BY id DESC LIMIT 1) RETURNING id""",
        (workspace, platform, channel, window_minutes * 60)).fetchone()
    if row is None:
        row = conn.execute("INSERT INTO alert_storms (workspace, platform, channel) VALUES (%s, %s, %s) "
                           "RETURNING id", (workspace, platform, channel)).fetchone()
    return row["id"]


def storm_groups(conn: psycopg.Connection, storm_id: int) -> list[dict[str, Any]]:
    """The groups a storm summary lists, with their alert counts by newest state."""
    return conn.execute(
        """SELECT g.*, a.name, a.service, a.severity,
                  (SELECT count(*) FILTER (WHERE s.status = 'firing') FROM (
                       SELECT DISTINCT ON (fingerprint) status FROM alerts WHERE group_id = g.id
                       ORDER BY fingerprint, id DESC) s) AS firing,
                  (SELECT count(DISTINCT fingerprint) FROM alerts WHERE group_id = g.id) AS total
           FROM alert_groups g JOIN alerts a ON a.id = g.first_alert_id
           WHERE g.storm_id = %s ORDER BY g.id""", (storm_id,)).fetchall()
