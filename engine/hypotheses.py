"""Deterministic scoring of candidate causes: five weighted factors (DESIGN.md), shown on the card."""
from __future__ import annotations

from datetime import timedelta

from engine.context import Context
from engine.llm import Candidate
from engine.models import Hypothesis

WEIGHTS = {
    "signal_strength": 0.25,
    "temporal_correlation": 0.20,
    "precedent_frequency": 0.20,
    "evidence_quality": 0.20,
    "validation_history": 0.15,
}
SHOW_ABOVE = 0.4
INCONCLUSIVE_BELOW = 0.3
SHOW_AT_MOST = 3

_SEVERITY = {"critical": 1.0, "page": 1.0, "high": 0.9, "error": 0.85, "major": 0.85, "warning": 0.6,
             "medium": 0.6, "minor": 0.45, "low": 0.4, "info": 0.3, "none": 0.2}
_MATCH = {"alert_name": 1.0, "service": 0.75, "text": 0.5, None: 0.4}


def score(candidate: Candidate, context: Context, *, precedents: int | None = None) -> Hypothesis:
    """`precedents`: how many past incidents confirm this cause; by default its `precedent` evidence."""
    if precedents is None:
        precedents = sum(1 for e in candidate.evidence if e.kind == "precedent")
    factors = {
        "signal_strength": _signal(candidate, context),
        "temporal_correlation": _temporal(candidate, context),
        "precedent_frequency": min(1.0, precedents / 3),
        "evidence_quality": _evidence_quality(candidate),
        "validation_history": _validation(candidate, context),
    }
    confidence = sum(WEIGHTS[name] * value for name, value in factors.items())
    return Hypothesis(title=candidate.title, cause=candidate.cause, confidence=round(confidence, 3),
                      evidence=candidate.evidence, factors={k: round(v, 3) for k, v in factors.items()})


def rank(candidates: list[Candidate], context: Context) -> tuple[list[Hypothesis], bool]:
    """Scored, best first, cut to what the policy shows; True as second value when inconclusive."""
    scored = sorted((score(c, context) for c in candidates), key=lambda h: (-h.confidence, h.title))
    unique: list[Hypothesis] = []
    for hypothesis in scored:
        if all(h.title != hypothesis.title for h in unique):
            unique.append(hypothesis)
    if not unique or all(h.confidence < INCONCLUSIVE_BELOW for h in unique):
        return unique[:SHOW_AT_MOST], True
    return [h for h in unique if h.confidence > SHOW_ABOVE][:SHOW_AT_MOST], False


def _signal(candidate: Candidate, context: Context) -> float:
    severity = _SEVERITY.get(context.alert.severity, 0.5) if context.alert else 0.6
    match = max((_MATCH.get(e.match, 0.4) for e in candidate.evidence if e.kind in ("runbook", "change")),
                default=0.4)
    return severity * match


def _temporal(candidate: Candidate, context: Context) -> float:
    """1.0 for a change in the 15 minutes before the alert, falling to 0 a day before."""
    best = 0.0
    for item in candidate.evidence:
        if item.kind != "change" or item.at is None:
            continue
        gap = context.anchor_time - item.at
        if gap < timedelta(minutes=-5):
            continue
        minutes = max(gap.total_seconds() / 60, 0)
        value = 1.0 if minutes <= 15 else max(0.0, 1 - (minutes - 15) / (24 * 60))
        best = max(best, value)
    if best == 0.0 and any(e.kind == "related_alert" for e in candidate.evidence):
        best = 0.3
    return best


def _evidence_quality(candidate: Candidate) -> float:
    kinds = {e.kind for e in candidate.evidence}
    with_source = sum(1 for e in candidate.evidence if e.source)
    return min(1.0, 0.3 * len(kinds) + 0.1 * with_source)


def _validation(candidate: Candidate, context: Context) -> float:
    helpful, total = context.feedback.get(candidate.title, (0, 0))
    return (helpful + 1) / (total + 2)
