"""Plan lifecycle shared by handlers and workers: store, draw, queue, redraw. One place decides how a
step moves from proposed to queued, so a click, a retry and an auto-run cannot dispatch twice."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import psycopg

from engine.cards import Card, CardStep, StepsBlock, annotation_card
from engine.models import Annotation
from engine.workflow import flow_label, waiting_on
from storage import audit, outbox
from storage import plans as plan_store

ACTIONABLE = "proposed"


def plan_message_key(plan_id: int) -> str:
    return f"plan:{plan_id}"


def card_steps(rows: list[dict[str, Any]]) -> list[CardStep]:
    out = []
    index_of = {row["key"]: i for i, row in enumerate(rows, start=1)}
    for i, row in enumerate(rows, start=1):
        actions = ["approve", "reject"] if row["status"] == ACTIONABLE and row["requires_approval"] else []
        if row["status"] == "interrupted":
            actions = ["retry"]   # a human who checked its effect may run it again
        note = row.get("refusal")
        if row["status"] in ("succeeded", "failed", "interrupted") and row.get("result"):
            note = (row["result"] or {}).get("summary") or note
        approved_by = [a for a in (row.get("approved_by") or []) if a]
        if row["status"] == ACTIONABLE and approved_by:
            note = f"approved by {', '.join(approved_by)}; waiting for another approver (two-person rule)"
        if note is None and row.get("why"):
            note = f"why: {row['why']}"   # a model-proposed step says what evidence it acts on
        if row["status"] == "approved" and row.get("needs") is not None:
            note = note or "approved; runs once the steps it waits for have succeeded"
        out.append(CardStep(step_id=row["id"], index=i, title=row["title"], connector=row["connector"],
                            target=row["target"], risk=row["risk"], status=row["status"], actions=actions,
                            note=note, decided_by=_decider(row),
                            flow=flow_label(row.get("needs"), row.get("parallel_group"), index_of)))
    return out


def _decider(row: dict[str, Any]) -> str | None:
    who = row.get("decided_by")
    if row["status"] == ACTIONABLE:
        return None  # a partial approval is shown in the step's note, not as a decision
    if who == "warroom" and row["status"] != "rejected":
        return "policy (read-only auto-run)"
    return who


def store_annotation_plan(conn: psycopg.Connection, annotation: Annotation, *, runbook_pk: int | None,
                          alert_id: int | None, requested_by: str | None, platform: str | None,
                          channel: str | None, thread: str | None, environment: str | None = None,
                          workspace: str = "default") -> tuple[int | None, Card]:
    """Persist the plan (if any) and the card drawn for it; returns (plan id, card)."""
    plan = annotation.plan
    if plan is None or not plan.steps:
        return None, annotation_card(annotation, steps=[], plan_id=None)
    plan_id = plan_store.create_plan(conn, plan=plan.model_dump(mode="json", by_alias=True), workspace=workspace,
                                     alert_id=alert_id, runbook_pk=runbook_pk, requested_by=requested_by,
                                     platform=platform, channel=channel, thread=thread, environment=environment,
                                     service=_plan_service(conn, annotation, runbook_pk))
    plan_store.set_message_key(conn, plan_id, plan_message_key(plan_id))
    card = annotation_card(annotation, steps=card_steps(plan_store.plan_steps(conn, plan_id)), plan_id=plan_id)
    conn.execute("UPDATE plans SET card = %s::jsonb WHERE id = %s", (card.model_dump_json(), plan_id))
    audit.append(conn, actor=requested_by or "warroom", action="plan.proposed", subject=f"plan:{plan_id}",
                 detail={"runbook": plan.runbook_id, "steps": [s.key for s in plan.steps], "alert_id": alert_id},
                 workspace=workspace)
    return plan_id, card


def _plan_service(conn: psycopg.Connection, annotation: Annotation, runbook_pk: int | None) -> str | None:
    """The service a plan acts on, for approver rules and rate limits: the alert's, the question's, or the
    runbook's when it names exactly one."""
    service = (annotation.alert.service if annotation.alert else None) or annotation.service
    if service is None and runbook_pk is not None:
        row = conn.execute("SELECT services FROM runbooks WHERE id = %s", (runbook_pk,)).fetchone()
        if row and len(row["services"] or []) == 1:
            service = row["services"][0]
    return service


def redraw(conn: psycopg.Connection, plan_id: int) -> Card | None:
    """The stored card with the current step states; enqueued as an in-place update when it was posted."""
    plan = plan_store.get_plan(conn, plan_id)
    if plan is None or plan["card"] is None:
        return None
    card = Card.model_validate(plan["card"])
    steps = card_steps(plan_store.plan_steps(conn, plan_id))
    blocks = [b.model_copy(update={"items": steps}) if isinstance(b, StepsBlock) else b for b in card.blocks]
    card = card.model_copy(update={"blocks": blocks})
    conn.execute("UPDATE plans SET card = %s::jsonb WHERE id = %s", (card.model_dump_json(), plan_id))
    if plan["platform"] and plan["channel"]:
        outbox.enqueue(conn, platform=plan["platform"], channel=plan["channel"], op="update",
                       message_key=plan["message_key"], card=json.loads(card.model_dump_json()))
    return card


def approve_and_queue(conn: psycopg.Connection, step_id: int, *, actor: str, platform: str, reason: str,
                      workspace: str = "default", identity: str | None = None) -> dict[str, Any] | None:
    """proposed -> queued in one guarded UPDATE, with the approval and audit rows; None if not proposed.

    A workflow step whose needs have not all succeeded is approved but not queued (-> `approved`): the worker
    that finishes its last need queues it. Callers dispatch only a row that comes back `queued`."""
    waiting = _waiting_on(conn, step_id)
    if waiting:
        row = plan_store.transition(conn, step_id, from_=[ACTIONABLE], to="approved")
        if row is None:
            return None
        plan_store.record_approval(conn, step_id=step_id, actor=actor, platform=platform, approve=True,
                                   identity=identity, reason=reason)
        audit.append(conn, actor=actor, action="step.approved", subject=f"step:{step_id}",
                     detail={"key": row["key"], "risk": row["risk"], "reason": reason, "platform": platform,
                             "identity": identity, "waiting_on": waiting}, workspace=workspace)
        return row
    row = plan_store.transition(conn, step_id, from_=[ACTIONABLE], to="queued",
                                queued_at=datetime.now(timezone.utc), job_id=f"step-{step_id}")
    if row is None:
        return None
    plan_store.record_approval(conn, step_id=step_id, actor=actor, platform=platform, approve=True,
                               identity=identity, reason=reason)
    audit.append(conn, actor=actor, action="step.approved", subject=f"step:{step_id}",
                 detail={"key": row["key"], "risk": row["risk"], "reason": reason, "platform": platform,
                         "identity": identity}, workspace=workspace)
    audit.append(conn, actor="warroom", action="step.dispatched", subject=f"step:{step_id}",
                 detail={"job_id": row["job_id"]}, workspace=workspace)
    return row


def _waiting_on(conn: psycopg.Connection, step_id: int) -> list[str]:
    """The needs of a workflow step that have not succeeded. Read under the audit chain lock, which a worker
    finishing a need holds from its result until commit: either we read after its commit, or it finds this row
    locked by us, leaves it, and we see the success (connectors/workflow.py)."""
    step = plan_store.get_step(conn, step_id, lock=True)
    if step is None or step["needs"] is None or step["status"] != ACTIONABLE:
        return []
    audit.lock_chain(conn)
    return waiting_on(step["needs"], plan_store.step_statuses(conn, step["plan_id"], kind=step["kind"]))


def queue_approved(conn: psycopg.Connection, step_id: int, *, workspace: str = "default") -> dict[str, Any] | None:
    """approved -> queued for a workflow step whose needs have now succeeded (its approval is already recorded)."""
    row = plan_store.transition(conn, step_id, from_=["approved"], to="queued",
                                queued_at=datetime.now(timezone.utc), job_id=f"step-{step_id}")
    if row is not None:
        audit.append(conn, actor="warroom", action="step.dispatched", subject=f"step:{step_id}",
                     detail={"job_id": row["job_id"], "reason": "its needs succeeded"}, workspace=workspace)
    return row


def record_partial_approval(conn: psycopg.Connection, step: dict[str, Any], *, actor: str, platform: str,
                            identity: str, reason: str, workspace: str = "default") -> None:
    """One of several approvals the two-person rule asks for: recorded and audited; the step stays proposed."""
    plan_store.record_approval(conn, step_id=step["id"], actor=actor, platform=platform, approve=True,
                               identity=identity, reason=reason)
    audit.append(conn, actor=actor, action="step.approval_recorded", subject=f"step:{step['id']}",
                 detail={"key": step["key"], "risk": step["risk"], "reason": reason, "platform": platform,
                         "identity": identity}, workspace=workspace)


def expire(conn: psycopg.Connection, plan_id: int, *, reason: str, actor: str,
           workspace: str = "default") -> list[dict[str, Any]]:
    """Every still-proposed step of a stale plan -> expired, so the redrawn card offers no buttons at all."""
    expired = []
    for step in plan_store.plan_steps(conn, plan_id):
        row = plan_store.transition(conn, step["id"], from_=[ACTIONABLE], to="expired", refusal="approval expired")
        if row is not None:
            audit.append(conn, actor=actor, action="step.expired", subject=f"step:{row['id']}",
                         detail={"key": row["key"], "reason": reason}, workspace=workspace)
            expired.append(row)
    return expired


def retry_interrupted(conn: psycopg.Connection, step_id: int, actor: str, *, platform: str, reason: str,
                      workspace: str = "default", identity: str | None = None) -> dict[str, Any] | None:
    """interrupted -> queued in one guarded UPDATE, with the approval and audit rows; None if not interrupted.
    An interrupted step may have half-happened, so it runs again only when a human says so, once per click
    however many clicks race: the caller dispatches only when a row comes back."""
    row = plan_store.transition(conn, step_id, from_=["interrupted"], to="queued",
                                queued_at=datetime.now(timezone.utc), job_id=f"step-{step_id}",
                                started_at=None, finished_at=None, heartbeat_at=None, worker=None)
    if row is None:
        return None
    plan_store.record_approval(conn, step_id=step_id, actor=actor, platform=platform, approve=True,
                               identity=identity, reason=reason)
    audit.append(conn, actor=actor, action="step.retry_approved", subject=f"step:{step_id}",
                 detail={"key": row["key"], "risk": row["risk"], "reason": reason, "platform": platform,
                         "identity": identity, "attempts_so_far": row["attempts"]}, workspace=workspace)
    audit.append(conn, actor="warroom", action="step.dispatched", subject=f"step:{step_id}",
                 detail={"job_id": row["job_id"]}, workspace=workspace)
    return row


def reject(conn: psycopg.Connection, step_id: int, *, actor: str, platform: str,
           workspace: str = "default") -> dict[str, Any] | None:
    row = plan_store.transition(conn, step_id, from_=[ACTIONABLE], to="rejected")
    if row is None:
        return None
    plan_store.record_approval(conn, step_id=step_id, actor=actor, platform=platform, approve=False)
    audit.append(conn, actor=actor, action="step.rejected", subject=f"step:{step_id}", detail={"key": row["key"]},
                 workspace=workspace)
    return row
