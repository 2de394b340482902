"""The annotation pipeline shared by alert threads, questions and replay:
context -> candidate causes -> deterministic ranking -> validated plan."""
from __future__ import annotations

import logging
from typing import Any

from engine.context import assemble
from engine.hypotheses import rank
from engine.memory import SOURCE_TYPE as CONVERSATION_SOURCE, ThreadMemory, skip_ran_steps
from engine.llm.offline import PRECEDENT_SIMILARITY
from engine.models import Alert, Annotation, Change
from engine.planner import build_plan, matching_runbook
from engine.precedents import supported
from handlers.conversation import index_ended_quietly
from handlers.services import Services

log = logging.getLogger(__name__)


def annotate(services: Services, *, alert: Alert | None = None, alert_id: int | None = None,
             question: str | None = None, service: str | None = None, environment: str | None = None,
             extra_changes: list[Change] | None = None,
             background: str | None = None,
             memory: ThreadMemory | None = None) -> tuple[Annotation, dict[str, Any] | None]:
    """Build the annotation; returns it with the runbook row its plan came from. `background` (a thread's
    earlier messages) widens retrieval without becoming the question shown on the card. `memory` (what this
    thread established) ranks ruled-out causes down, keeps steps that already ran off the plan and reaches the
    model as the conversation so far."""
    asked = "\n".join(filter(None, [question, background])) or None
    index_ended_quietly(services)   # conversations that ended since: findable as precedents from now on
    context = assemble(services.pool, services.embedder, alert=alert, question=asked, service=service,
                       environment=environment, alert_id=alert_id, workspace=services.workspace,
                       extra_changes=extra_changes, config=services.config, memory=memory)
    try:
        candidates = services.provider.hypotheses(context)
    except Exception:  # a failing model never leaves a thread without an answer
        log.exception("provider %s failed; answering with the offline provider", services.provider.name)
        candidates = services.fallback.hypotheses(context)
    candidates = supported(candidates, context.precedents, services.embedder)
    hypotheses, inconclusive = rank(candidates, context)
    plan, runbook_row = build_plan(context, services.config, proposed=_model_plan(services, context, hypotheses))
    plan, ran = skip_ran_steps(plan, memory)
    annotation = Annotation(alert=alert, question=question, service=service, hypotheses=hypotheses,
                            inconclusive=inconclusive,
                            citations=[c.model_copy(update={"text": c.text[:500]}) for c in context.citations
                                       if not c.source.startswith(f"{CONVERSATION_SOURCE}:")],
                            plan=plan, memory_notes=[*ran, *_earlier_conversations(context)])
    return annotation, runbook_row


def _earlier_conversations(context) -> list[str]:
    """Similar conversations of other threads, each with the link to its thread."""
    return [f"Similar earlier conversation: {p.title} — {p.link or p.source} (what was found: {p.resolution})"
            for p in context.precedents if p.source.startswith(f"{CONVERSATION_SOURCE}:")
            and context.similarity.get(p.source, 0.0) >= PRECEDENT_SIMILARITY]


def _model_plan(services: Services, context, hypotheses):
    """Runbook first: a model is asked for a plan only when no runbook matches and the provider can propose
    one (the offline provider cannot). Whatever it proposes is validated step by step by the planner."""
    propose = getattr(services.provider, "propose_plan", None)
    if propose is None or matching_runbook(context) is not None:
        return None
    targets = {name: target.connector for name, target in services.config.targets.items()}
    return propose(context, hypotheses=hypotheses, targets=targets)
