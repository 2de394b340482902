"""The annotation pipeline shared by alert threads, questions and replay:
context -> candidate causes -> deterministic ranking -> validated plan."""
from __future__ import annotations

import logging
from typing import Any

from engine.context import assemble
from engine.hypotheses import rank
from engine.models import Alert, Annotation, Change
from engine.planner import build_plan, matching_runbook
from engine.precedents import supported
from handlers.services import Services

log = logging.getLogger(__name__)


def annotate(services: Services, *, alert: Alert | None = None, alert_id: int | None = None,
             question: str | None = None, service: str | None = None, environment: str | None = None,
             extra_changes: list[Change] | None = None,
             background: str | None = None) -> tuple[Annotation, dict[str, Any] | None]:
    """Build the annotation; returns it with the runbook row its plan came from. `background` (a thread's
    earlier messages) widens retrieval without becoming the question shown on the card."""
    asked = "\n".join(filter(None, [question, background])) or None
    context = assemble(services.pool, services.embedder, alert=alert, question=asked, service=service,
                       environment=environment, alert_id=alert_id, workspace=services.workspace,
                       extra_changes=extra_changes, config=services.config)
    try:
        candidates = services.provider.hypotheses(context)
    except Exception:  # a failing model never leaves a thread without an answer
        log.exception("provider %s failed; answering with the offline provider", services.provider.name)
        candidates = services.fallback.hypotheses(context)
    candidates = supported(candidates, context.precedents, services.embedder)
    hypotheses, inconclusive = rank(candidates, context)
    plan, runbook_row = build_plan(context, services.config, proposed=_model_plan(services, context, hypotheses))
    annotation = Annotation(alert=alert, question=question, service=service, hypotheses=hypotheses,
                            inconclusive=inconclusive,
                            citations=[c.model_copy(update={"text": c.text[:500]}) for c in context.citations],
                            plan=plan)
    return annotation, runbook_row


def _model_plan(services: Services, context, hypotheses):
    """Runbook first: a model is asked for a plan only when no runbook matches and the provider can propose
    one (the offline provider cannot). Whatever it proposes is validated step by step by the planner."""
    propose = getattr(services.provider, "propose_plan", None)
    if propose is None or matching_runbook(context) is not None:
        return None
    targets = {name: target.connector for name, target in services.config.targets.items()}
    return propose(context, hypotheses=hypotheses, targets=targets)
