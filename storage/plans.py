"""Plans, their steps and approvals. Step status only moves through guarded UPDATEs, so a step is
claimed by exactly one caller however many clicks, retries or workers race for it."""
from __future__ import annotations

import json
from typing import Any, Iterable

import psycopg


def create_plan(conn: psycopg.Connection, *, plan: dict[str, Any], workspace: str = "default",
                alert_id: int | None = None, runbook_pk: int | None = None, requested_by: str | None = None,
                platform: str | None = None, channel: str | None = None, thread: str | None = None,
                environment: str | None = None, service: str | None = None) -> int:
    row = conn.execute(
        """INSERT INTO plans (workspace, alert_id, runbook_pk, title, source, requested_by, platform, channel, thread,
                              environment, service)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (workspace, alert_id, runbook_pk, plan["title"], plan["source"], requested_by, platform, channel,
         thread, environment, service)).fetchone()
    plan_id = row["id"]
    for i, step in enumerate(plan["steps"]):
        conn.execute(
            """INSERT INTO plan_steps (plan_id, ordinal, key, title, connector, target, risk, params, rollback,
                                       verify, requires_approval, status, refusal, why, needs, parallel_group)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s)""",
            (plan_id, i, step["key"], step["title"], step["connector"], step.get("target"), step["risk"],
             json.dumps(step.get("params", {})), _json_or_null(step.get("rollback")),
             _json_or_null(step.get("verify")), step.get("requires_approval", True), step.get("status", "proposed"),
             step.get("refusal"), step.get("why"), step.get("needs"), step.get("parallel")))
    return plan_id


def _json_or_null(value: Any) -> str | None:
    return json.dumps(value, default=str) if value else None


def set_message_key(conn: psycopg.Connection, plan_id: int, message_key: str) -> None:
    conn.execute("UPDATE plans SET message_key = %s WHERE id = %s", (message_key, plan_id))


def get_plan(conn: psycopg.Connection, plan_id: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM plans WHERE id = %s", (plan_id,)).fetchone()


def plan_steps(conn: psycopg.Connection, plan_id: int) -> list[dict[str, Any]]:
    """The plan's steps in order, each with who decided it last (`decided_by`), for the card."""
    return conn.execute(
        """SELECT s.*, (SELECT a.actor FROM approvals a WHERE a.step_id = s.id ORDER BY a.id DESC LIMIT 1)
                  AS decided_by,
                  (SELECT array_agg(a.actor ORDER BY a.id) FROM approvals a
                   WHERE a.step_id = s.id AND a.decision = 'approve') AS approved_by
           FROM plan_steps s WHERE s.plan_id = %s ORDER BY s.ordinal""", (plan_id,)).fetchall()


def lock_if_free(conn: psycopg.Connection, step_id: int) -> bool:
    """Lock a step row unless another transaction holds it (then False, at once: never wait for it)."""
    return conn.execute("SELECT id FROM plan_steps WHERE id = %s FOR UPDATE SKIP LOCKED", (step_id,)
                        ).fetchone() is not None


def step_statuses(conn: psycopg.Connection, plan_id: int, *, kind: str = "step") -> dict[str, str]:
    """key -> status for the plan's steps of one kind, read afresh (a new statement sees every commit so far)."""
    rows = conn.execute("SELECT key, status FROM plan_steps WHERE plan_id = %s AND kind = %s",
                        (plan_id, kind)).fetchall()
    return {r["key"]: r["status"] for r in rows}


def plans_with_waiting_steps(conn: psycopg.Connection, limit: int = 100) -> list[int]:
    """Workflow plans with a step approved (or runnable without a click) that has not been queued: candidates
    for the sweeper, which queues those whose needs have all succeeded."""
    rows = conn.execute(
        """SELECT DISTINCT plan_id FROM plan_steps
           WHERE needs IS NOT NULL AND (status = 'approved' OR (status = 'proposed' AND NOT requires_approval))
           ORDER BY plan_id LIMIT %s""", (limit,)).fetchall()
    return [r["plan_id"] for r in rows]


def get_step(conn: psycopg.Connection, step_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    sql = "SELECT * FROM plan_steps WHERE id = %s" + (" FOR UPDATE" if lock else "")
    return conn.execute(sql, (step_id,)).fetchone()


def latest_plan_for_channel(conn: psycopg.Connection, *, platform: str, channel: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM plans WHERE platform = %s AND channel = %s ORDER BY id DESC LIMIT 1",
                        (platform, channel)).fetchone()


def transition(conn: psycopg.Connection, step_id: int, *, from_: Iterable[str], to: str,
               only_worker: str | None = None, **fields: Any) -> dict[str, Any] | None:
    """Move a step to `to` only if it is in one of `from_` (and, with `only_worker`, still held by that worker:
    a result arriving after the step was declared dead and retried must not overwrite the retry's); returns the
    updated row or None."""
    sets = ["status = %(to)s"]
    for name in fields:
        if name not in {"refusal", "result", "job_id", "queued_at", "started_at", "finished_at", "heartbeat_at",
                        "worker"}:
            raise ValueError(f"cannot set {name}")
        sets.append(f"{name} = %({name})s" + ("::jsonb" if name == "result" else ""))
    if to == "running":
        sets.append("attempts = attempts + 1")
    params = {"id": step_id, "from_": list(from_), "to": to, "only_worker": only_worker,
              **{k: (json.dumps(v, default=str) if k == "result" else v) for k, v in fields.items()}}
    held = " AND worker = %(only_worker)s" if only_worker else ""
    return conn.execute(
        f"UPDATE plan_steps SET {', '.join(sets)} WHERE id = %(id)s AND status = ANY(%(from_)s){held} RETURNING *",
        params).fetchone()


def heartbeat(conn: psycopg.Connection, step_id: int, worker: str) -> bool:
    """Stamp a running step as alive; False once it is no longer running under this worker."""
    row = conn.execute(
        "UPDATE plan_steps SET heartbeat_at = now() WHERE id = %s AND status = 'running' AND worker = %s RETURNING id",
        (step_id, worker)).fetchone()
    return row is not None


def interrupt_stale(conn: psycopg.Connection, *, lease_s: float, summary: str,
                    step_id: int | None = None) -> list[dict[str, Any]]:
    """running -> interrupted, in one guarded UPDATE, for steps whose last sign of life (heartbeat, or the
    claim itself for steps claimed before heartbeats existed) is older than the lease. Returns the rows, each
    with its plan's workspace; `heartbeat_at` and `worker` still say who was running it and when last seen."""
    return conn.execute(
        """UPDATE plan_steps s SET status = 'interrupted', finished_at = now(),
                  result = jsonb_build_object('summary', %(summary)s::text)
           FROM plans p
           WHERE p.id = s.plan_id AND s.status = 'running'
             AND coalesce(s.heartbeat_at, s.started_at) < now() - make_interval(secs => %(lease)s)
             AND (%(step)s::bigint IS NULL OR s.id = %(step)s::bigint)
           RETURNING s.*, p.workspace""",
        {"summary": summary, "lease": lease_s, "step": step_id}).fetchall()


def lock_stale_queued(conn: psycopg.Connection, *, grace_s: float, limit: int = 100) -> list[dict[str, Any]]:
    """Steps queued longer than the grace period, locked (so none leaves `queued` while the caller looks at its
    job) and skipping any a worker is claiming right now."""
    return conn.execute(
        """SELECT s.*, p.workspace FROM plan_steps s JOIN plans p ON p.id = s.plan_id
           WHERE s.status = 'queued' AND coalesce(s.queued_at, '-infinity') < now() - make_interval(secs => %s)
           ORDER BY s.id LIMIT %s FOR UPDATE OF s SKIP LOCKED""", (grace_s, limit)).fetchall()


def record_approval(conn: psycopg.Connection, *, step_id: int, actor: str, platform: str, approve: bool,
                    identity: str | None = None, reason: str | None = None) -> int:
    row = conn.execute(
        """INSERT INTO approvals (step_id, actor, platform, decision, identity, reason)
           VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
        (step_id, actor, platform, "approve" if approve else "reject", identity, reason)).fetchone()
    return row["id"]


def approvals_for(conn: psycopg.Connection, step_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM approvals WHERE step_id = %s ORDER BY id", (step_id,)).fetchall()


def approving_identities(conn: psycopg.Connection, step_id: int) -> list[str]:
    """Who (as a person) has approved this step so far: the two-person rule counts them."""
    rows = conn.execute("SELECT DISTINCT coalesce(identity, platform || ':' || actor) AS who FROM approvals "
                        "WHERE step_id = %s AND decision = 'approve'", (step_id,)).fetchall()
    return [r["who"] for r in rows]


def recent_state_changes(conn: psycopg.Connection, *, service: str | None, workspace: str,
                         hours: float = 1.0) -> int:
    """State-changing steps of this service dispatched in the last `hours` (queued or further along)."""
    row = conn.execute(
        """SELECT count(*) AS n FROM plan_steps s JOIN plans p ON p.id = s.plan_id
           WHERE p.workspace = %s AND p.service IS NOT DISTINCT FROM %s AND s.risk <> 'read_only'
             AND s.queued_at > now() - make_interval(secs => %s)""",
        (workspace, service, hours * 3600)).fetchone()
    return row["n"]
