"""The record behind an alert's noise score, human verdicts on it, and silences."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from engine.config import NoiseConfig
from engine.noise import NoiseFacts

# Someone acted on a firing: a person approved a step of its plan, or moved its incident (the bot's own
# automatic moves are made as "warroom" and do not count).
_TOUCHED = """
    EXISTS (SELECT 1 FROM plans p JOIN plan_steps s ON s.plan_id = p.id JOIN approvals a ON a.step_id = s.id
            WHERE p.alert_id = f.id AND a.actor <> 'warroom')
    OR EXISTS (SELECT 1 FROM incidents i JOIN incident_transitions t ON t.incident_id = i.id
               WHERE i.alert_id = f.id AND t.actor <> 'warroom' AND t.from_state IS NOT NULL)"""


def facts(conn: psycopg.Connection, alert: dict[str, Any], config: NoiseConfig, *, now: datetime,
          workspace: str = "default") -> NoiseFacts:
    """`alert` is the stored firing row being annotated; its earlier firings within the lookback are its record."""
    since = now - timedelta(hours=config.lookback_hours)
    rows = conn.execute(
        f"""SELECT f.id, coalesce(f.starts_at, f.received_at) AS began, r.ended, ({_TOUCHED}) AS touched
              FROM alerts f
              LEFT JOIN LATERAL (
                   SELECT coalesce(r.ends_at, r.received_at) AS ended FROM alerts r
                    WHERE r.workspace = f.workspace AND r.fingerprint = f.fingerprint AND r.status = 'resolved'
                      AND r.id > f.id ORDER BY r.id LIMIT 1) r ON true
             WHERE f.workspace = %s AND f.fingerprint = %s AND f.status = 'firing' AND f.id <= %s
               AND coalesce(f.starts_at, f.received_at) >= %s
             ORDER BY f.id""", (workspace, alert["fingerprint"], alert["id"], since)).fetchall()
    earlier = [r for r in rows if r["id"] != alert["id"] and r["ended"] is not None]
    durations = [max(0.0, (r["ended"] - r["began"]).total_seconds()) for r in earlier]
    quick = config.quick_resolve_minutes * 60
    verdict = latest_verdict(conn, alert["fingerprint"], since=now - timedelta(days=config.mark_memory_days),
                             workspace=workspace)
    return NoiseFacts(
        firings=len(rows) if any(r["id"] == alert["id"] for r in rows) else len(rows) + 1,
        past_episodes=len(earlier),
        quick_untouched=sum(1 for r, d in zip(earlier, durations) if d <= quick and not r["touched"]),
        durations_s=durations,
        mark=verdict["verdict"] if verdict else None, marked_by=verdict["actor"] if verdict else None,
        marked_at=verdict["at"] if verdict else None)


def latest_verdict(conn: psycopg.Connection, fingerprint: str, *, since: datetime,
                   workspace: str = "default") -> dict[str, Any] | None:
    return conn.execute("SELECT verdict, actor, at FROM alert_verdicts WHERE workspace = %s AND fingerprint = %s "
                        "AND at >= %s ORDER BY id DESC LIMIT 1", (workspace, fingerprint, since)).fetchone()


def add_verdict(conn: psycopg.Connection, alert: dict[str, Any], *, verdict: str, actor: str,
                workspace: str = "default") -> int:
    return conn.execute("INSERT INTO alert_verdicts (workspace, fingerprint, alert_name, service, verdict, actor) "
                        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                        (workspace, alert["fingerprint"], alert["name"], alert["service"], verdict, actor)
                        ).fetchone()["id"]


def active_silence(conn: psycopg.Connection, fingerprint: str, *, now: datetime,
                   workspace: str = "default") -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM alert_silences WHERE workspace = %s AND fingerprint = %s "
                        "AND starts_at <= %s AND ends_at > %s ORDER BY ends_at DESC LIMIT 1",
                        (workspace, fingerprint, now, now)).fetchone()


def add_silence(conn: psycopg.Connection, alert: dict[str, Any], *, actor: str, until: datetime, reason: str | None,
                workspace: str = "default") -> dict[str, Any]:
    return conn.execute("INSERT INTO alert_silences (workspace, fingerprint, alert_name, service, actor, reason, "
                        "ends_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
                        (workspace, alert["fingerprint"], alert["name"], alert["service"], actor, reason, until)
                        ).fetchone()
