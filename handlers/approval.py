"""Approve / Reject clicks: policy, then audit, then dispatch. The clicker always hears why."""
from __future__ import annotations

import json
from dataclasses import dataclass

from engine.cards import notice
from engine.models import StepDecision
from engine.plans import approve_and_queue, redraw, reject
from engine.policy import decide_approval, is_approver
from handlers.services import Services
from storage import audit, outbox
from storage import plans as plan_store


@dataclass(frozen=True)
class Reply:
    """What the clicker sees right away (ephemeral where the platform allows)."""

    text: str
    ok: bool


def decide(services: Services, decision: StepDecision) -> Reply:
    queued = False
    with services.pool.connection() as conn, conn.transaction():
        step = plan_store.get_step(conn, decision.step_id, lock=True)
        if step is None:
            return Reply(f"There is no step {decision.step_id}.", False)
        plan = plan_store.get_plan(conn, step["plan_id"])
        who = decision.actor.email or decision.actor.id
        if (decision.channel and plan["channel"] and plan["platform"] == decision.actor.platform
                and decision.channel != plan["channel"]):
            return Reply(f"Step {step['key']} belongs to a plan in another channel.", False)
        if not is_approver(decision.actor, services.config.policy):
            audit.append(conn, actor=who, action="step.approval_refused", subject=f"step:{step['id']}",
                         detail={"key": step["key"], "reason": "not an approver",
                                 "decision": "approve" if decision.approve else "reject"},
                         workspace=services.workspace)
            return Reply(f"Not run: {decision.actor.name or decision.actor.id} is not an approver "
                         "(policy.approvers in warroom.yml); ask one of them to click.", False)
        if not decision.approve:
            if step["status"] != "proposed" or reject(conn, step["id"], actor=who, platform=decision.actor.platform,
                                                     workspace=services.workspace) is None:
                return Reply(f"Step {step['key']} is already {step['status']}; nothing to reject.", False)
            redraw(conn, plan["id"])
            return Reply(f"Rejected step {step['key']}: it will not run.", True)
        verdict = decide_approval(step=step, actor=decision.actor, requested_by=plan["requested_by"],
                                  environment=plan["environment"], policy=services.config.policy)
        if not verdict.allowed:
            audit.append(conn, actor=who, action="step.approval_refused", subject=f"step:{step['id']}",
                         detail={"key": step["key"], "reason": verdict.reason}, workspace=services.workspace)
            return Reply(f"Not run: {verdict.reason}.", False)
        if approve_and_queue(conn, step["id"], actor=who, platform=decision.actor.platform, reason=verdict.reason,
                             workspace=services.workspace) is None:
            return Reply(f"Step {step['key']} is already being handled.", False)
        redraw(conn, plan["id"])
        queued = True
    if queued:
        services.dispatch(step["id"])
    return Reply(f"Approved step {step['key']} ({step['title']}); running it now.", True)


def click(services: Services, decision: StepDecision, *, platform: str, channel: str,
          thread_id: str | None = None) -> Reply:
    """A button click from a chat: decide, and tell the clicker privately when nothing happened (the card
    itself shows approvals, progress and results to everyone)."""
    answer = decide(services, decision)
    if not answer.ok:
        with services.pool.connection() as conn, conn.transaction():
            outbox.enqueue(conn, platform=platform, channel=channel, op="ephemeral", recipient=decision.actor.id,
                           thread_id=thread_id, card=json.loads(notice("Not run", answer.text,
                                                                       style="warning").model_dump_json()))
    return answer


def step_by_index(services: Services, *, platform: str, channel: str, index: int) -> int | None:
    """Step N (1-based) of the latest plan shown in a channel, for text adapters."""
    with services.pool.connection() as conn:
        plan = plan_store.latest_plan_for_channel(conn, platform=platform, channel=channel)
        if plan is None:
            return None
        steps = plan_store.plan_steps(conn, plan["id"])
    return steps[index - 1]["id"] if 0 < index <= len(steps) else None
