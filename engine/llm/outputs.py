"""The structured outputs asked of a model. Their JSON schemas are sent as the tool input_schema and kept,
versioned, in prompts/schemas/ (a test keeps the files equal to these models)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.models import Intent
from engine.plan_schema import ProposedPlan


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposedCause(_Output):
    title: str = Field(min_length=3, max_length=120, description="Short name of the cause, e.g. 'Bad deploy v2.14'.")
    cause: str = Field(min_length=3, max_length=600,
                       description="One or two sentences: what is wrong and why the evidence points to it.")
    evidence: list[str] = Field(default_factory=list, max_length=8,
                                description="Ids of evidence items from the context (e.g. C1, R2) that support it.")


class HypothesesOutput(_Output):
    hypotheses: list[ProposedCause] = Field(max_length=5, description="Candidate causes, most likely first.")


class IntentOutput(_Output):
    intent: Intent = Field(description="What the message asks the bot to do.")
    confidence: float = Field(ge=0.0, le=1.0, description="How sure, 0 to 1.")


# Output name (schema file prompts/schemas/<name>.json, tool name) -> model.
OUTPUTS: dict[str, type[BaseModel]] = {
    "propose_hypotheses": HypothesesOutput,
    "classify_intent": IntentOutput,
    "proposed_plan": ProposedPlan,   # its schema and validator live with the planner (engine/plan_schema.py)
}
