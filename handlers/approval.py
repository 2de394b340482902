"""Approve / Reject clicks: policy, then audit, then dispatch. The clicker always hears why."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from engine.cards import notice
from engine.models import StepDecision
from engine import approvals, incident_hooks
from engine.approvals import Facts
from engine.plans import approve_and_queue, expire, record_partial_approval, redraw, reject, retry_interrupted
from handlers.services import Services
from storage import audit, outbox
from storage import freezes as freeze_store
from storage import memory as memory_store
from storage import plans as plan_store


@dataclass(frozen=True)
class Reply:
    """What the clicker sees right away (ephemeral where the platform allows)."""

    text: str
    ok: bool


def decide(services: Services, decision: StepDecision) -> Reply:
    """Policy decides, the audit log records the verdict and its rule, and the clicker hears why."""
    queued = False
    policy = services.config.policy
    with services.pool.connection() as conn, conn.transaction():
        step = plan_store.get_step(conn, decision.step_id, lock=True)
        if step is None:
            return Reply(f"There is no step {decision.step_id}.", False)
        plan = plan_store.get_plan(conn, step["plan_id"])
        who = decision.actor.email or decision.actor.id
        if (decision.channel and plan["channel"] and plan["platform"] == decision.actor.platform
                and decision.channel != plan["channel"]):
            return Reply(f"Step {step['key']} belongs to a plan in another channel.", False)
        if not decision.approve:
            return _reject(services, conn, step, plan, decision, who)
        retry = step["status"] == "interrupted"
        facts = Facts(step={**step, "status": "proposed"} if retry else step, plan=plan, actor=decision.actor,
                      now=datetime.now(timezone.utc),
                      earlier_approvers=[] if retry else plan_store.approving_identities(conn, step["id"]),
                      freezes=freeze_store.active(conn, workspace=services.workspace),
                      recent_changes=plan_store.recent_state_changes(conn, service=plan["service"],
                                                                     workspace=services.workspace))
        verdict = approvals.decide(facts, policy)
        me = approvals.identity(decision.actor)
        if not verdict.allowed:
            audit.append(conn, actor=who, action="step.approval_refused", subject=f"step:{step['id']}",
                         detail={"key": step["key"], "rule": verdict.rule, "reason": verdict.reason,
                                 "identity": me}, workspace=services.workspace)
            if verdict.rule == "expiry" and expire(conn, plan["id"], reason=verdict.reason, actor=who,
                                                   workspace=services.workspace):
                redraw(conn, plan["id"])
            return Reply(f"Not run: {verdict.reason}.", False)
        if retry:
            # A retry is one approver's call under every other rule: the step may have half-happened, and the
            # person retrying says they checked. It runs once however many clicks race.
            if retry_interrupted(conn, step["id"], who, platform=decision.actor.platform, reason=verdict.reason,
                                 workspace=services.workspace, identity=me) is None:
                return Reply(f"Step {step['key']} is already being handled.", False)
            redraw(conn, plan["id"])
            _remember(conn, services, step, "approved", decision.actor.name or who)
            queued = True
        elif verdict.more_needed:
            record_partial_approval(conn, step, actor=who, platform=decision.actor.platform, identity=me,
                                    reason=verdict.reason, workspace=services.workspace)
            redraw(conn, plan["id"])
            return Reply(f"Step {step['key']} not run yet: {verdict.reason}.", True)
        else:
            row = approve_and_queue(conn, step["id"], actor=who, platform=decision.actor.platform,
                                    reason=verdict.reason, workspace=services.workspace, identity=me)
            if row is None:
                return Reply(f"Step {step['key']} is already being handled.", False)
            redraw(conn, plan["id"])
            incident_hooks.step_approved(conn, plan, step, approved_by=who, workspace=services.workspace)
            _remember(conn, services, step, "approved", decision.actor.name or who)
            queued = row["status"] == "queued"
            if not queued:   # a workflow step waiting for others: the worker finishing the last one queues it
                needs = step["needs"]
                return Reply(f"Approved step {step['key']} ({step['title']}); it runs once {', '.join(needs)} "
                             f"{'has' if len(needs) == 1 else 'have'} succeeded.", True)
    if queued:
        services.dispatch(step["id"])
    verb = "Retrying" if retry else "Approved"
    return Reply(f"{verb} step {step['key']} ({step['title']}); running it now.", True)


def _reject(services: Services, conn, step: dict, plan: dict, decision: StepDecision, who: str) -> Reply:
    """Any approver of the step's service and environment may stop it; nobody else."""
    if not approvals.is_approver(decision.actor, services.config.policy, plan["service"], plan["environment"]):
        names, source = approvals.approvers_for(services.config.policy, plan["service"], plan["environment"])
        audit.append(conn, actor=who, action="step.approval_refused", subject=f"step:{step['id']}",
                     detail={"key": step["key"], "rule": "approvers", "reason": "not an approver",
                             "decision": "reject"}, workspace=services.workspace)
        return Reply(f"Not run: {decision.actor.name or decision.actor.id} is not an approver ({source}: "
                     f"{', '.join(names)}); ask one of them to click.", False)
    if step["status"] != "proposed" or reject(conn, step["id"], actor=who, platform=decision.actor.platform,
                                             workspace=services.workspace) is None:
        return Reply(f"Step {step['key']} is already {step['status']}; nothing to reject.", False)
    redraw(conn, plan["id"])
    _remember(conn, services, step, "rejected", decision.actor.name or who)
    memory_store.end_if_plan_done(conn, plan["id"], workspace=services.workspace)
    return Reply(f"Rejected step {step['key']}: it will not run.", True)


def _remember(conn, services: Services, step: dict, kind: str, who: str) -> None:
    """The decision as a turn of the plan's conversation."""
    memory_store.record_for_plan(conn, step["plan_id"], kind=kind, text=f"{kind} step {step['key']}: {step['title']}",
                                 refs={"step_id": step["id"], "key": step["key"], "title": step["title"]}, actor=who,
                                 workspace=services.workspace)


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
