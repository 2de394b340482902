"""What a worker does around a step besides running it: refuse it at the last moment when a freeze started after
the click, check its effect with the declared read-only `verify`, and turn a failure into its rollback step —
queued at once where policy allows (`policy.auto_rollback`, no freeze), otherwise proposed for approval."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

import psycopg

from connectors.base import StepResult
from engine.approvals import active_config_freeze, emergency_freeze
from engine.config import WarroomConfig
from storage import audit
from storage import freezes as freeze_store
from storage import plans as plan_store

log = logging.getLogger(__name__)


def freeze_reason(conn: psycopg.Connection, step: dict[str, Any], config: WarroomConfig,
                  workspace: str) -> str | None:
    """Why a queued state-changing step may not start now (a freeze began after it was approved), or None."""
    if step["risk"] == "read_only":
        return None
    plan = plan_store.get_plan(conn, step["plan_id"])
    active = freeze_store.active(conn, workspace=workspace)
    return (emergency_freeze(active, plan["service"])
            or active_config_freeze(config.policy, plan["service"], plan["environment"], datetime.now(timezone.utc)))


def verified(step: dict[str, Any], result: StepResult,
             run: Callable[[dict[str, Any]], StepResult]) -> StepResult:
    """Run the step's `verify` check after it succeeded; a failed check fails the step (and so rolls it back).
    `run` runs a {connector, target, with} action the way the step itself ran."""
    check = step.get("verify")
    if not result.ok or not check:
        return result
    outcome = run(check)
    data = {**result.data, "verification": {"ok": outcome.ok, "summary": outcome.summary}}
    if outcome.ok:
        return StepResult(ok=True, summary=f"{result.summary}; verified: {outcome.summary}", output=result.output,
                          data=data)
    return StepResult(ok=False, summary=f"{result.summary}, but verification failed: {outcome.summary}",
                      output="\n".join(filter(None, [result.output, outcome.output])), data=data)


def add_rollback(conn: psycopg.Connection, step: dict[str, Any], config: WarroomConfig,
                 workspace: str, *, after: list[str] | None = None) -> dict[str, Any] | None:
    """After `step` failed: its rollback as a step of the same plan. Returns the new row (status `queued` when
    it is to run now: the caller dispatches it after commit), or None when there is nothing to roll back.

    `after` (a workflow's rollback chain, connectors/workflow.py): the rollback keys it waits for. It is then
    stored `proposed` with those needs, runnable without a click when automatic, and queued by the workflow
    once they have succeeded."""
    action = step.get("rollback")
    if not action or step.get("kind") == "rollback":
        return None
    frozen = freeze_reason(conn, step, config, workspace)
    automatic = config.policy.auto_rollback and not frozen
    why_not = None if automatic else (f"change freeze: {frozen}" if frozen else "policy.auto_rollback is off")
    if after is not None:
        return _chained_rollback(conn, step, action, automatic, why_not, after, workspace)
    ordinal = conn.execute("SELECT coalesce(max(ordinal), -1) + 1 AS n FROM plan_steps WHERE plan_id = %s",
                           (step["plan_id"],)).fetchone()["n"]
    row = conn.execute(
        """INSERT INTO plan_steps (plan_id, ordinal, key, title, connector, target, risk, params, verify,
                                   requires_approval, status, kind, parent_step_id, queued_at, job_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, 'rollback', %s, %s, NULL)
           ON CONFLICT (parent_step_id) WHERE kind = 'rollback' DO NOTHING RETURNING *""",
        (step["plan_id"], ordinal, f"{step['key']}-rollback", f"Roll back: {step['title']}", action["connector"],
         action.get("target") or step["target"], step["risk"], json.dumps(action.get("with") or {}),
         json.dumps(step["verify"]) if step.get("verify") else None, not automatic,
         "queued" if automatic else "proposed", step["id"],
         datetime.now(timezone.utc) if automatic else None)).fetchone()
    if row is None:
        return None  # this failure was already handled (a redelivered job)
    if automatic:
        conn.execute("UPDATE plan_steps SET job_id = %s WHERE id = %s", (f"step-{row['id']}", row["id"]))
        audit.append(conn, actor="warroom", action="step.rollback_dispatched", subject=f"step:{row['id']}",
                     detail={"key": row["key"], "rolls_back": step["id"], "reason": "policy.auto_rollback"},
                     workspace=workspace)
    else:
        audit.append(conn, actor="warroom", action="step.rollback_proposed", subject=f"step:{row['id']}",
                     detail={"key": row["key"], "rolls_back": step["id"], "reason": why_not}, workspace=workspace)
    return {**row, "job_id": f"step-{row['id']}" if automatic else None, "why_not_automatic": why_not}


def _chained_rollback(conn: psycopg.Connection, step: dict[str, Any], action: dict[str, Any], automatic: bool,
                      why_not: str | None, after: list[str], workspace: str) -> dict[str, Any] | None:
    ordinal = conn.execute("SELECT coalesce(max(ordinal), -1) + 1 AS n FROM plan_steps WHERE plan_id = %s",
                           (step["plan_id"],)).fetchone()["n"]
    row = conn.execute(
        """INSERT INTO plan_steps (plan_id, ordinal, key, title, connector, target, risk, params, verify,
                                   requires_approval, status, kind, parent_step_id, needs)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, 'proposed', 'rollback', %s, %s)
           ON CONFLICT (parent_step_id) WHERE kind = 'rollback' DO NOTHING RETURNING *""",
        (step["plan_id"], ordinal, f"{step['key']}-rollback", f"Roll back: {step['title']}", action["connector"],
         action.get("target") or step["target"], step["risk"], json.dumps(action.get("with") or {}),
         json.dumps(step["verify"]) if step.get("verify") else None, not automatic, step["id"], after)).fetchone()
    if row is None:
        return None
    audit.append(conn, actor="warroom", action="step.rollback_planned", subject=f"step:{row['id']}",
                 detail={"key": row["key"], "rolls_back": step["id"], "after": after, "automatic": automatic,
                         "reason": "policy.auto_rollback" if automatic else why_not}, workspace=workspace)
    return {**row, "why_not_automatic": why_not}


def rollback_note(row: dict[str, Any]) -> str:
    """The sentence the thread gets about a rollback step."""
    if row["status"] == "queued":
        return f"Rolling back automatically (policy.auto_rollback): step {row['key']} is running."
    return (f"Rollback step {row['key']} is proposed and needs an approval ({row['why_not_automatic']}); "
            "approve it on the plan card.")
