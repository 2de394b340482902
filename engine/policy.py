"""Deterministic policy: who may approve what, and what may never run. Every refusal says why."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.config import PolicyConfig
from engine.models import Actor


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def blocked_pattern(params: dict[str, Any], policy: PolicyConfig) -> str | None:
    """The blocked pattern a step's parameters contain, if any (case-insensitive, whitespace-folded)."""
    haystack = " ".join(json.dumps(params, default=str).lower().split())
    for pattern in policy.blocked_commands:
        if " ".join(pattern.lower().split()) in haystack:
            return pattern
    return None


def needs_approval(risk: str, policy: PolicyConfig) -> bool:
    return not (risk == "read_only" and policy.auto_run_read_only)


def is_approver(actor: Actor, policy: PolicyConfig) -> bool:
    """With no approvers configured anyone in the channel may approve (the doctor warns about it).
    Only the platform's user id and the email it vouches for count: display names can be changed by anyone."""
    if not policy.approvers:
        return True
    names = {actor.id, actor.email} - {None}
    allowed = {a.lower() for a in policy.approvers}
    return any(n.lower() in allowed for n in names)


def decide_approval(*, step: dict[str, Any], actor: Actor, requested_by: str | None, environment: str | None,
                    policy: PolicyConfig) -> Decision:
    status = step["status"]
    if status != "proposed":
        return Decision(False, f"step {step['key']} is already {status}")
    pattern = blocked_pattern(step.get("params") or {}, policy)
    if pattern:
        return Decision(False, f"step {step['key']} matches the blocked pattern {pattern!r}")
    if not is_approver(actor, policy):
        return Decision(False, f"{actor.name or actor.id} is not an approver (policy.approvers)")
    if (policy.two_person_rule and step["risk"] != "read_only" and environment == "production"
            and requested_by and requested_by == actor.id):
        return Decision(False, "two-person rule: the requester may not approve their own state-changing step "
                               "in production")
    return Decision(True, f"approved by {actor.name or actor.id}")
