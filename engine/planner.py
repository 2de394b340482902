"""Plans: typed steps from the best-matching executable runbook, validated before any card is drawn.
Runbook-first: a model's proposal is used only when no runbook fits, and only after engine.plan_schema
has validated it."""
from __future__ import annotations

import logging
from typing import Any

from engine.config import WarroomConfig
from engine.context import Context
from engine.connector_params import params_refusal
from engine.models import Plan, PlanStep, Risk, RunbookStep, StepAction
from engine.plan_schema import ProposedPlan, ProposedPlanError, validate_proposed_plan
from engine.policy import blocked_pattern, minimum_risk, needs_approval, riskier
from engine.workflow import dependencies, workflow_error

log = logging.getLogger(__name__)

MIN_TEXT_MATCH_SCORE = 0.02  # RRF score of a runbook found only by text; below it the match is a guess


def build_plan(context: Context, config: WarroomConfig, *,
               proposed: dict[str, Any] | str | ProposedPlan | None = None) -> tuple[Plan, dict | None]:
    """The plan for this context and the runbook row it came from (None when no runbook fits).

    `proposed` is a model's plan (tool output); it is only looked at when no runbook fits, and output that
    fails the schema is dropped for the offline answer (no plan), never shown.
    """
    row = matching_runbook(context)
    if row is not None:
        spec = row["spec"]
        return Plan(runbook_id=spec["metadata"]["id"], title=spec["metadata"]["title"],
                    steps=runbook_steps([RunbookStep.model_validate(s) for s in spec["steps"]], config),
                    source="runbook"), row
    if proposed is not None:
        try:
            return validate_proposed_plan(proposed, context, config), None
        except ProposedPlanError as exc:
            log.warning("model plan refused, answering with the offline plan: %s", exc)
    return offline_plan(), None


def matching_runbook(context: Context) -> dict | None:
    """The best runbook row for the context, if any is a real match. Providers ask a model for a plan only
    when this is None."""
    for row in context.runbooks:
        if row.get("match") == "text" and (row.get("retrieval_score") or 0) < MIN_TEXT_MATCH_SCORE:
            continue
        return row
    return None


def offline_plan() -> Plan:
    return Plan(title="No runbook matches", steps=[], source="none")


def runbook_steps(steps: list[RunbookStep], config: WarroomConfig) -> list[PlanStep]:
    """The plan steps of a runbook, each with what it waits for. A graph that is not a DAG (a runbook stored
    before it was checked at ingest) leaves every step on the card, refused with the reason."""
    graph_error = workflow_error(steps)
    graph = None if graph_error else dependencies(steps)
    planned = []
    for step in steps:
        plan_step = validate_step(step, config).model_copy(
            update={"needs": graph[step.id] if graph else None, "parallel": step.parallel})
        if graph_error:
            plan_step = plan_step.model_copy(update={"status": "refused", "refusal": f"workflow: {graph_error}"})
        planned.append(plan_step)
    return planned


def validate_step(step: RunbookStep, config: WarroomConfig) -> PlanStep:
    """A step that names an unknown target or a blocked pattern is kept on the card but refused."""
    refusal = None
    if step.target and step.target not in config.targets:
        refusal = f"unknown target {step.target!r} (not in warroom.yml targets)"
    elif step.target and config.targets[step.target].connector != step.connector:
        refusal = f"target {step.target!r} is a {config.targets[step.target].connector} target, not {step.connector}"
    else:
        pattern = blocked_pattern(step.with_, config.policy)
        if pattern:
            refusal = f"blocked pattern {pattern!r}"
    rollback_refusal = None
    if step.rollback and step.rollback.target and step.rollback.target not in config.targets:
        rollback_refusal = f"rollback names unknown target {step.rollback.target!r}"
    refusal = (refusal or params_refusal(step.connector, step.with_, "") or rollback_refusal
               or (params_refusal(step.rollback.connector, step.rollback.with_, "rollback: ") if step.rollback else None)
               or _verify_refusal(step.verify, config))
    # A runbook author cannot talk risk down either: what the step runs sets the floor (a `read_only` step
    # whose command restarts a service would otherwise run without a click under auto_run_read_only).
    risk = riskier(step.risk.value, minimum_risk(step.connector, step.with_))
    raised = None if risk == step.risk.value else (
        f"declared {step.risk.value}, treated as {risk}: what it runs may change state")
    return PlanStep(key=step.id, title=step.title, connector=step.connector, target=step.target, risk=Risk(risk),
                    params=step.with_, rollback=step.rollback, verify=step.verify,
                    status="refused" if refusal else "proposed",
                    requires_approval=needs_approval(risk, config.policy), refusal=refusal, why=raised)


def _verify_refusal(verify: StepAction | None, config: WarroomConfig) -> str | None:
    """A verification runs without a click of its own, so it must only read."""
    if verify is None:
        return None
    if verify.target and verify.target not in config.targets:
        return f"verify names unknown target {verify.target!r}"
    invalid = params_refusal(verify.connector, verify.with_, "verify: ")
    if invalid:
        return invalid
    if minimum_risk(verify.connector, verify.with_) != "read_only":
        return "verify must be a read-only check (it runs without its own approval)"
    return None


def risk_label(risk: Risk | str) -> str:
    return {"read_only": "read-only", "state_change": "changes state", "high": "HIGH RISK"}[
        risk.value if isinstance(risk, Risk) else risk]
