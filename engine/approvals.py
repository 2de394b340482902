"""Who may approve a step, when, and how many people it takes. Pure: the handler gathers the facts (the step,
its plan, earlier approvals, active freezes, recent changes) and this module decides, naming the rule that
decided and a sentence the person who clicked can act on."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from engine.config import DAYS, ChangeWindow, PolicyConfig
from engine.models import Actor
from engine.policy import blocked_pattern


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str                  # the rule that decided: what the audit entry records
    more_needed: int = 0       # allowed, but this many further approvals are needed before it runs


@dataclass(frozen=True)
class Facts:
    """What policy looks at for one click. `freezes` are the emergency freezes active now (rows with
    `service`, `reason`, `frozen_by`); `recent_changes` counts the service's state changes in the last hour."""

    step: dict[str, Any]
    plan: dict[str, Any]
    actor: Actor
    now: datetime
    earlier_approvers: list[str] = field(default_factory=list)   # identities that already approved this step
    freezes: list[dict[str, Any]] = field(default_factory=list)
    recent_changes: int = 0


def identity(actor: Actor) -> str:
    """One person, whichever platform they clicked on: their email (or Teams UPN) when the platform vouches for
    one, else platform:id. Display names never count: anyone can change theirs."""
    if actor.email:
        return actor.email.lower()
    if actor.upn:
        return actor.upn.lower()
    return f"{actor.platform}:{actor.id}"


def approvers_for(policy: PolicyConfig, service: str | None, environment: str | None) -> tuple[list[str], str]:
    """The approver list that governs this service and environment, and where it comes from (for the reply)."""
    matching = [(i, rule) for i, rule in enumerate(policy.approver_rules) if rule.covers(service, environment)]
    if matching:
        names = [a for _, rule in matching for a in rule.approvers]
        return names, "policy.approver_rules[" + ",".join(str(i) for i, _ in matching) + "]"
    return list(policy.approvers), "policy.approvers"


def is_approver(actor: Actor, policy: PolicyConfig, service: str | None = None,
                environment: str | None = None) -> bool:
    """With no approvers configured anyone in the channel may approve (the doctor warns about it). Only the
    platform's user id, AAD object id and the email or UPN it vouches for count."""
    names, _ = approvers_for(policy, service, environment)
    return not names or _named(actor, names, policy)


def _named(actor: Actor, names: list[str], policy: PolicyConfig) -> bool:
    """Is the actor one of `names` (ids, emails, UPNs, `group:<name>` expanded)?"""
    allowed = set()
    for name in names:
        members = policy.groups.get(name.removeprefix("group:"), []) if name.startswith("group:") else [name]
        allowed |= {m.lower() for m in members}
    return any(n.lower() in allowed for n in {actor.id, actor.email, actor.upn} - {None})


def is_production(policy: PolicyConfig, environment: str | None) -> bool:
    return environment in policy.production_environments


def approvals_required(policy: PolicyConfig, *, risk: str, environment: str | None,
                       requested_by: str | None) -> int:
    """The two-person rule in production: a state change needs two people — the person who asked plus one
    approver, or two approvers when the bot proposed it on its own (an alert); a `high` step always needs two
    approvers besides whoever asked."""
    if not policy.two_person_rule or risk == "read_only" or not is_production(policy, environment):
        return 1
    if risk == "high":
        return 2
    return 1 if requested_by else 2


def decide(facts: Facts, policy: PolicyConfig) -> Decision:
    """The verdict on one Approve click, checks in the order a person would want to hear them."""
    step, plan, actor = facts.step, facts.plan, facts.actor
    key, risk = step["key"], step["risk"]
    service, environment = plan.get("service"), plan.get("environment")
    if step["status"] != "proposed":
        return Decision(False, f"step {key} is already {step['status']}", "status")
    expired = _expired(policy, plan.get("created_at"), facts.now)
    if expired:
        return Decision(False, expired, "expiry")
    pattern = blocked_pattern(step.get("params") or {}, policy)
    if pattern:
        return Decision(False, f"step {key} matches the blocked pattern {pattern!r} (policy.blocked_commands)",
                        "blocked_pattern")
    if not is_approver(actor, policy, service, environment):
        names, source = approvers_for(policy, service, environment)
        where = _where(service, environment)
        return Decision(False, f"{actor.name or actor.id} is not an approver{where} ({source}: "
                               f"{', '.join(names)})", "approvers")
    required = approvals_required(policy, risk=risk, environment=environment, requested_by=plan.get("requested_by"))
    me = identity(actor)
    if (policy.two_person_rule and risk != "read_only" and is_production(policy, environment)
            and _is_requester(actor, plan.get("requested_by"))):
        return Decision(False, "two-person rule: the requester may not approve their own state-changing step "
                               "in production; ask another approver", "two_person")
    if me in facts.earlier_approvers:
        return Decision(False, f"you already approved step {key}; the two-person rule needs a different approver",
                        "two_person")
    if risk != "read_only":
        for check in (_frozen, _outside_window, _over_rate):
            refusal = check(facts, policy, service, environment)
            if refusal:
                return refusal
    more = max(0, required - len(set(facts.earlier_approvers) | {me}))
    if more:
        return Decision(True, f"approval recorded ({required - more} of {required}); {_risk_words(risk)} in "
                              f"{environment} needs {more} more approver{'s' if more > 1 else ''}", "two_person",
                        more_needed=more)
    return Decision(True, f"approved by {actor.name or actor.id}", "approved")


def _is_requester(actor: Actor, requested_by: str | None) -> bool:
    return bool(requested_by) and requested_by in {actor.id, actor.email, actor.upn}


def _where(service: str | None, environment: str | None) -> str:
    parts = [p for p in (service, environment) if p]
    return f" for {' in '.join(parts)}" if parts else ""


def _risk_words(risk: str) -> str:
    return "a high-risk step" if risk == "high" else "a state-changing step"


def _expired(policy: PolicyConfig, created_at: datetime | None, now: datetime) -> str | None:
    if not policy.approval_expiry_minutes or created_at is None:
        return None
    age = now - created_at
    if age <= timedelta(minutes=policy.approval_expiry_minutes):
        return None
    return (f"this plan is {int(age.total_seconds() // 60)} minutes old and approvals expire after "
            f"{policy.approval_expiry_minutes} (policy.approval_expiry_minutes); ask again for a fresh plan so it "
            "reflects what is happening now")


# --- freezes, change windows, rate limits: state-changing steps only ---------------------------------------

def active_config_freeze(policy: PolicyConfig, service: str | None, environment: str | None,
                         now: datetime) -> str | None:
    for freeze in policy.freezes:
        if freeze.covers(service, environment) and freeze.start <= now < freeze.end:
            return f"{freeze.reason} until {freeze.end.isoformat(timespec='minutes')} (policy.freezes)"
    return None


def emergency_freeze(freezes: list[dict[str, Any]], service: str | None) -> str | None:
    for row in freezes:
        if row["service"] is None or row["service"] == service:
            scope = f"{row['service']} is" if row["service"] else "all state changes are"
            why = f": {row['reason']}" if row.get("reason") else ""
            return f"{scope} frozen by {row['frozen_by']}{why} (`/warroom unfreeze` lifts it)"
    return None


def _frozen(facts: Facts, policy: PolicyConfig, service: str | None, environment: str | None) -> Decision | None:
    why = emergency_freeze(facts.freezes, service) or active_config_freeze(policy, service, environment, facts.now)
    return Decision(False, f"change freeze: {why}", "freeze") if why else None


def _outside_window(facts: Facts, policy: PolicyConfig, service: str | None,
                    environment: str | None) -> Decision | None:
    windows = [w for w in policy.change_windows if w.covers(service, environment)]
    if not windows or any(_inside(w, facts.now) for w in windows):
        return None
    opening = min(filter(None, (_next_opening(w, facts.now) for w in windows)), default=None)
    described = "; ".join(_describe(w) for w in windows)
    then = f"; the next window opens {opening.strftime('%a %Y-%m-%d %H:%M %Z')}" if opening else ""
    return Decision(False, f"outside the change window{_where(service, environment)} ({described}){then} "
                           "(policy.change_windows)", "change_window")


def _inside(window: ChangeWindow, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    return DAYS[local.weekday()] in window.days and window.start <= local.strftime("%H:%M") < window.end


def _next_opening(window: ChangeWindow, now: datetime) -> datetime | None:
    zone = ZoneInfo(window.timezone)
    local = now.astimezone(zone)
    hours, minutes = (int(x) for x in window.start.split(":"))
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        start = datetime(day.year, day.month, day.day, hours, minutes, tzinfo=zone)
        if DAYS[day.weekday()] in window.days and start > local:
            return start
    return None


def _describe(window: ChangeWindow) -> str:
    return f"{','.join(window.days)} {window.start}-{window.end} {window.timezone}"


def _over_rate(facts: Facts, policy: PolicyConfig, service: str | None, environment: str | None) -> Decision | None:
    limit = policy.max_state_changes_per_hour
    if not limit or facts.recent_changes < limit:
        return None
    return Decision(False, f"{service or 'this service'} already had {facts.recent_changes} state changes in the "
                           f"last hour (policy.max_state_changes_per_hour: {limit}); wait, or raise the limit",
                    "rate_limit")


def may_lift_freeze(actor: Actor, policy: PolicyConfig, service: str | None) -> bool:
    """Anyone may pull the emergency brake; only an approver may release it: a global approver, or one named by
    a rule covering the service (in any environment)."""
    if not policy.approvers and not policy.approver_rules:
        return True  # nobody is named: anyone may approve, so anyone may lift
    rules = [r for r in policy.approver_rules if service is None or not r.services or service in r.services]
    return _named(actor, [*policy.approvers, *(a for r in rules for a in r.approvers)], policy)
