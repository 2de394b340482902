"""Plans, their steps and approvals. Step status only moves through guarded UPDATEs, so a step is
claimed by exactly one caller however many clicks, retries or workers race for it."""
from __future__ import annotations

import json
from typing import Any, Iterable

import psycopg


def create_plan(conn: psycopg.Connection, *, plan: dict[str, Any], workspace: str = "default",
                alert_id: int | None = None, runbook_pk: int | None = None, requested_by: str | None = None,
                platform: str | None = None, channel: str | None = None, thread: str | None = None,
                environment: str | None = None) -> int:
    row = conn.execute(
        """INSERT INTO plans (workspace, alert_id, runbook_pk, title, source, requested_by, platform, channel, thread,
                              environment)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (workspace, alert_id, runbook_pk, plan["title"], plan["source"], requested_by, platform, channel,
         thread, environment)).fetchone()
    plan_id = row["id"]
    for i, step in enumerate(plan["steps"]):
        conn.execute(
            """INSERT INTO plan_steps (plan_id, ordinal, key, title, connector, target, risk, params, rollback,
                                       requires_approval, status, refusal, why)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s)""",
            (plan_id, i, step["key"], step["title"], step["connector"], step.get("target"), step["risk"],
             json.dumps(step.get("params", {})),
             json.dumps(step["rollback"], default=str) if step.get("rollback") else None,
             step.get("requires_approval", True), step.get("status", "proposed"), step.get("refusal"),
             step.get("why")))
    return plan_id


def set_message_key(conn: psycopg.Connection, plan_id: int, message_key: str) -> None:
    conn.execute("UPDATE plans SET message_key = %s WHERE id = %s", (message_key, plan_id))


def get_plan(conn: psycopg.Connection, plan_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM plans WHERE id = %s", (plan_id,)).fetchone()


def plan_steps(conn: psycopg.Connection, plan_id: int) -> list[dict[str, Any]]:
    """The plan's steps in order, each with who decided it last (`decided_by`), for the card."""
    return conn.execute(
        """SELECT s.*, (SELECT a.actor FROM approvals a WHERE a.step_id = s.id ORDER BY a.id DESC LIMIT 1)
                  AS decided_by
           FROM plan_steps s WHERE s.plan_id = %s ORDER BY s.ordinal""", (plan_id,)).fetchall()


def get_step(conn: psycopg.Connection, step_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    sql = "SELECT * FROM plan_steps WHERE id = %s" + (" FOR UPDATE" if lock else "")
    return conn.execute(sql, (step_id,)).fetchone()


def latest_plan_for_channel(conn: psycopg.Connection, *, platform: str, channel: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM plans WHERE platform = %s AND channel = %s ORDER BY id DESC LIMIT 1",
                        (platform, channel)).fetchone()


def transition(conn: psycopg.Connection, step_id: int, *, from_: Iterable[str], to: str,
               **fields: Any) -> dict[str, Any] | None:
    """Move a step to `to` only if it is in one of `from_`; returns the updated row or None."""
    sets = ["status = %(to)s"]
    for name in fields:
        if name not in {"refusal", "result", "job_id", "queued_at", "started_at", "finished_at"}:
            raise ValueError(f"cannot set {name}")
        sets.append(f"{name} = %({name})s" + ("::jsonb" if name == "result" else ""))
    if to == "running":
        sets.append("attempts = attempts + 1")
    params = {"id": step_id, "from_": list(from_), "to": to,
              **{k: (json.dumps(v, default=str) if k == "result" else v) for k, v in fields.items()}}
    return conn.execute(
        f"UPDATE plan_steps SET {', '.join(sets)} WHERE id = %(id)s AND status = ANY(%(from_)s) RETURNING *",
        params).fetchone()


def record_approval(conn: psycopg.Connection, *, step_id: int, actor: str, platform: str, approve: bool) -> int:
    row = conn.execute(
        "INSERT INTO approvals (step_id, actor, platform, decision) VALUES (%s, %s, %s, %s) RETURNING id",
        (step_id, actor, platform, "approve" if approve else "reject")).fetchone()
    return row["id"]


def approvals_for(conn: psycopg.Connection, step_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM approvals WHERE step_id = %s ORDER BY id", (step_id,)).fetchall()
