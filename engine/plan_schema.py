"""What a model may propose as a plan when no runbook fits, and the validator that turns it into a Plan.

The model only proposes. Its output must pass the schema (else it is refused whole and the offline plan
answers); then every step must name a known connector and a configured target of that connector, match no
blocked pattern, claim no less risk than what it runs, and, when it changes state in production, carry a
rollback. A step failing those checks stays on the card, refused, with the reason, and can never run.
The JSON schema of `ProposedPlan` is shipped as `prompts/schemas/proposed_plan.json` (a test keeps them equal),
for providers to send as a tool's `input_schema`.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError

from engine.config import Target, WarroomConfig
from engine.connector_params import params_refusal
from engine.models import ConnectorName, Frozen, Plan, PlanStep, Risk, StepAction, first_error
from engine.policy import blocked_pattern, minimum_risk, needs_approval, riskier

if TYPE_CHECKING:
    from engine.context import Context

MAX_STEPS = 8
SCHEMA_FILE = "schemas/proposed_plan.json"


class ProposedPlanError(ValueError):
    """The model's output is not a plan we can use; the message says why (for logs, never for the card)."""


class ProposedAction(Frozen):
    """What a rollback runs. Without a target it runs against the step's own target."""

    connector: ConnectorName
    target: str | None = Field(None, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)


class ProposedStep(Frozen):
    title: str = Field(min_length=1, max_length=200, description="Imperative, e.g. 'Check pool usage'")
    connector: ConnectorName
    target: str = Field(min_length=1, max_length=128, description="A target name from warroom.yml targets")
    risk: Risk = Field(description="read_only, state_change or high; never lower than what the step does")
    params: dict[str, Any] = Field(default_factory=dict, description="The connector's parameters "
                                   "(http: method, url/path; ssh: command; sql: query; ...)")
    rollback: ProposedAction | None = Field(None, description="How to undo the step; required for steps that "
                                            "change state in production")
    why: str = Field(min_length=1, max_length=500, description="Which evidence makes this step worth running")


class ProposedPlan(Frozen):
    """A plan proposed by a model when no executable runbook matches."""

    title: str = Field(min_length=1, max_length=200)
    steps: list[ProposedStep] = Field(min_length=1, max_length=MAX_STEPS)


def proposed_plan_schema() -> dict[str, Any]:
    """The shipped JSON schema (what providers send to the model)."""
    return json.loads((resources.files("prompts") / SCHEMA_FILE).read_text())


def parse_proposed_plan(raw: dict | str | ProposedPlan) -> ProposedPlan:
    """Schema validation only; a ProposedPlanError names the first problem."""
    if isinstance(raw, ProposedPlan):
        return raw
    try:
        if isinstance(raw, (str, bytes)):
            return ProposedPlan.model_validate_json(raw)
        return ProposedPlan.model_validate(raw)
    except ValidationError as exc:
        raise ProposedPlanError(f"model plan fails the schema: {first_error(exc)}") from exc


def validate_proposed_plan(raw: dict | str | ProposedPlan, context: Context, config: WarroomConfig) -> Plan:
    """The model's plan as a `Plan(source="model")` whose unsafe steps are refused with a reason.

    Raises ProposedPlanError when the output fails the schema (an unknown connector is a schema failure: the
    connector enum is part of it); the caller then answers with the offline plan.
    """
    proposed = parse_proposed_plan(raw)
    environment = context.environment
    steps = [_validate_step(i, step, environment, config) for i, step in enumerate(proposed.steps, start=1)]
    return Plan(title=proposed.title, steps=steps, source="model")


def _validate_step(index: int, step: ProposedStep, environment: str | None, config: WarroomConfig) -> PlanStep:
    risk = riskier(step.risk.value, minimum_risk(step.connector, step.params))  # a model cannot talk risk down
    rollback = _rollback(step)
    refusal = (_target_refusal(step.connector, step.target, step.params, config)
               or params_refusal(step.connector, step.params, "")
               or _blocked(step.params, config, "")
               or _rollback_refusal(rollback, config)
               or _production_refusal(step, risk, rollback, environment, config))
    return PlanStep(key=f"model-{index}", title=step.title, connector=step.connector, target=step.target,
                    risk=Risk(risk), params=step.params, rollback=rollback,
                    status="refused" if refusal else "proposed",
                    requires_approval=needs_approval(risk, config.policy), refusal=refusal, why=step.why)


def _rollback(step: ProposedStep) -> StepAction | None:
    if step.rollback is None:
        return None
    return StepAction(connector=step.rollback.connector, target=step.rollback.target or step.target,
                      with_=step.rollback.params)


def _target_refusal(connector: str, name: str | None, params: dict[str, Any], config: WarroomConfig) -> str | None:
    """Model steps reach only configured targets, through the target's own connector and address."""
    if not name or name not in config.targets:
        return f"unknown target {name!r} (model-proposed steps may only use warroom.yml targets)"
    target = config.targets[name]
    if target.connector != connector:
        return f"target {name!r} is a {target.connector} target, not {connector}"
    if connector == "http":
        return _http_refusal(name, target, params)
    return None


def _http_refusal(name: str, target: Target, params: dict[str, Any]) -> str | None:
    """An absolute URL would replace the target's base_url (urljoin), reaching a host nobody configured."""
    base = str(target.params().get("base_url") or "")
    url = str(params.get("url") or params.get("path") or "")
    if not base:
        return f"http target {name!r} has no base_url, so a model step cannot be confined to it"
    if urlsplit(url).scheme or url.startswith("//"):
        same_origin = urlsplit(url)[:2] == urlsplit(base)[:2]
        if not same_origin:
            return f"url {url!r} leaves target {name!r} ({base})"
    return None


def _blocked(params: dict[str, Any], config: WarroomConfig, where: str) -> str | None:
    pattern = blocked_pattern(params, config.policy)
    return f"{where}blocked pattern {pattern!r}" if pattern else None


def _rollback_refusal(rollback: StepAction | None, config: WarroomConfig) -> str | None:
    if rollback is None:
        return None
    refusal = (_target_refusal(rollback.connector, rollback.target, rollback.with_, config)
               or params_refusal(rollback.connector, rollback.with_, ""))
    return f"rollback: {refusal}" if refusal else _blocked(rollback.with_, config, "rollback: ")


def _production_refusal(step: ProposedStep, risk: str, rollback: StepAction | None, environment: str | None,
                        config: WarroomConfig) -> str | None:
    """Changing production without a way back is a decision for a runbook author, not a model."""
    target_env = config.targets[step.target].params().get("environment")
    in_production = "production" in (environment, target_env)
    if risk != "read_only" and in_production and rollback is None:
        return "changes state in production without a rollback"
    return None
