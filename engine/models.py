"""The vocabulary every layer speaks: frozen pydantic models, unknown fields refused.

Platform ids (Slack channel ids, Teams conversation ids, user ids) are opaque strings here.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from engine.workflow import workflow_error


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def first_error(exc: ValidationError) -> str:
    """`where.it.failed: what failed` for the first problem: one line a user can act on."""
    first = exc.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


class Intent(str, Enum):
    diagnose = "diagnose"
    runbook = "runbook"
    query_metrics = "query_metrics"
    run_action = "run_action"
    incident_status = "incident_status"
    acknowledge = "acknowledge"
    resolve = "resolve"
    escalate = "escalate"
    help = "help"
    unknown = "unknown"


class Risk(str, Enum):
    read_only = "read_only"
    state_change = "state_change"
    high = "high"


CONNECTORS = ("http", "ssh", "sql", "kubernetes", "prometheus")
ConnectorName = Literal["http", "ssh", "sql", "kubernetes", "prometheus"]


class Link(Frozen):
    title: str
    url: str


class Alert(Frozen):
    """One alert, normalised from whatever sent it."""

    source: str
    fingerprint: str
    status: Literal["firing", "resolved"]
    name: str
    severity: str = "unknown"
    service: str | None = None
    environment: str | None = None
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    links: list[Link] = Field(default_factory=list)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    group_key: str | None = None


class Change(Frozen):
    """A deploy, config change or flag flip: evidence for hypotheses."""

    service: str
    kind: Literal["deploy", "config", "infra", "feature_flag", "dependency"]
    summary: str
    version: str | None = None
    author: str | None = None
    at: datetime
    source: str | None = None   # provenance: where a person can look at the change (CI run, deploy log)


class Citation(Frozen):
    document_id: int
    chunk_id: int
    title: str
    source: str
    score: float
    text: str = ""


class Evidence(Frozen):
    """One fact behind a hypothesis, with where it came from."""

    # `live_query`: a value read from Prometheus while the context was assembled (the alert's own expression or a
    # configured query); it describes the symptom, so like `alert` it corroborates no particular cause.
    kind: Literal["alert", "change", "runbook", "precedent", "related_alert", "metric", "thread", "live_query"]
    text: str
    source: str | None = None
    at: datetime | None = None
    match: Literal["alert_name", "service", "text"] | None = None
    score: float | None = None


class Hypothesis(Frozen):
    title: str
    cause: str = ""
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[Evidence] = Field(default_factory=list)
    factors: dict[str, float] = Field(default_factory=dict)


class Classification(Frozen):
    intent: Intent
    confidence: float = Field(ge=0.0, le=1.0)
    entities: dict[str, str | None] = Field(default_factory=dict)
    layer: Literal["subcommand", "embedding", "llm", "fallback"] = "embedding"
    text: str = ""


# --- executable runbooks -------------------------------------------------------------------


class StepAction(Frozen):
    """Connector call: what a step or its rollback runs."""

    connector: ConnectorName
    target: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RunbookStep(Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    title: str
    connector: ConnectorName
    target: str | None = None
    risk: Risk = Risk.read_only
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    rollback: StepAction | None = None
    verify: StepAction | None = None      # a read-only check run after the step (and after its rollback)
    timeout: int | None = Field(None, ge=1, le=3600)
    # Workflow runbooks (engine/workflow.py): the steps this one waits for, and the group it may run beside.
    needs: list[str] | None = None
    parallel: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RunbookMetadata(Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    title: str
    services: list[str] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class Runbook(Frozen):
    apiVersion: Literal["warroom/v1"]
    kind: Literal["Runbook"]
    metadata: RunbookMetadata
    description: str = ""
    steps: list[RunbookStep] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _a_dag(cls, steps: list[RunbookStep]) -> list[RunbookStep]:
        error = workflow_error(steps)
        if error:
            raise PydanticCustomError("workflow", error)
        return steps


# --- plans ----------------------------------------------------------------------------------

StepStatus = Literal[
    "proposed", "approved", "queued", "running", "succeeded", "failed", "rejected", "refused", "interrupted",
    "expired", "skipped"]


class PlanStep(Frozen):
    id: int | None = None                # database id once stored
    key: str                              # runbook step id
    title: str
    connector: ConnectorName
    target: str | None = None
    risk: Risk
    params: dict[str, Any] = Field(default_factory=dict)
    rollback: StepAction | None = None
    verify: StepAction | None = None
    status: StepStatus = "proposed"
    requires_approval: bool = True
    refusal: str | None = None
    why: str | None = None                # a model-proposed step's stated reason (runbook steps have none)
    needs: list[str] | None = None        # keys this step waits for; None: not part of a workflow
    parallel: str | None = None           # its parallel group, shown on the card


class Plan(Frozen):
    id: int | None = None
    runbook_id: str | None = None
    title: str
    steps: list[PlanStep] = Field(default_factory=list)
    source: Literal["runbook", "llm", "none", "model"] = "runbook"   # "model": validated model proposal


class Annotation(Frozen):
    """What the bot says about an alert or a question: hypotheses, citations, plan."""

    alert: Alert | None = None
    question: str | None = None
    service: str | None = None        # the service a question was about (an alert carries its own)
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    inconclusive: bool = False
    citations: list[Citation] = Field(default_factory=list)
    plan: Plan | None = None
    # What the thread and earlier conversations add (engine/memory.py): steps that already ran here, with their
    # results, and similar earlier threads with their links.
    memory_notes: list[str] = Field(default_factory=list)


# --- chat events ----------------------------------------------------------------------------


class Actor(Frozen):
    """Who did something: a platform user id plus what else we know of them."""

    id: str
    platform: str = "shell"
    name: str | None = None
    email: str | None = None
    upn: str | None = None      # Teams: the user principal name, which need not equal the email


class ChatMessage(Frozen):
    platform: str
    channel: str
    text: str
    user: Actor
    thread: str | None = None
    message_id: str | None = None
    thread_context: list[str] = Field(default_factory=list)   # earlier messages of the thread, oldest first


class StepDecision(Frozen):
    """A click on Approve or Reject."""

    step_id: int
    approve: bool
    actor: Actor
    channel: str | None = None
    message_id: str | None = None
