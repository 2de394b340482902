"""Deterministic scoring of candidate causes: five weighted factors (DESIGN.md), shown on the card.

The weights are fixed by the design; what each factor measures is here. Every factor reads the candidate's own
evidence (and, for text matches and precedents, how closely the cited document fits the alert), so two candidates
of one alert score differently for reasons the card can show. The factors are built so that thin evidence cannot
add up to a confident answer: with no precedent and no human feedback a candidate tops out near 0.72, a text
match alone stays under the 0.4 the card shows, and 0.85 needs corroboration from past incidents on top of a
change or runbook that fits."""
from __future__ import annotations

from datetime import timedelta

from engine.context import Context
from engine.llm import Candidate
from engine.memory import rank_down
from engine.models import Evidence, Hypothesis

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

_SEVERITY = {"critical": 1.0, "page": 1.0, "p1": 1.0, "sev1": 1.0, "high": 0.9, "error": 0.85, "major": 0.85,
             "warning": 0.6, "medium": 0.6, "minor": 0.45, "low": 0.4, "info": 0.3, "none": 0.2}
# How specifically one piece of evidence ties a cause to this alert (the signal factor takes the best).
_CHANGE_SPECIFICITY = {"service": 0.8, "text": 0.55}        # a change on the alerting service / one the alert names
# A runbook written for this alert is as specific as evidence gets; one for the service is, as far as its text
# reads like the alert; a text match only by how far its similarity rises above what any document gets:
# (floor, what a perfect fit adds).
_RUNBOOK_FOR_ALERT = 1.0
_RUNBOOK_BY_FIT = {"service": (0.7, 0.3), "text": (0.25, 0.45)}
_PRECEDENT_SPECIFICITY = 0.6
_METRIC_SPECIFICITY = 0.8
_NO_SPECIFIC_EVIDENCE = 0.2
# What one independent kind of evidence adds to evidence quality (each kind counted once, provenance required).
_QUALITY = {"change": 0.5, "runbook_alert_name": 0.55, "runbook_service": 0.3, "runbook_text": 0.1,
            "precedent": 0.35, "related_alert": 0.2, "metric": 0.35}
_QUALITY_TEXT_FIT = 0.25     # what a document's fit to the alert adds to a service or text match
_SYMPTOM_WITH_SOURCE = 0.1   # the alert links back to its source (a graph, a runbook URL)
# Similarity (query vs. the cited chunk's best window, MiniLM cosine) below LOW is what retrieval returns for
# anything (unrelated runbooks measured 0.1-0.45); at HIGH the document is plainly about this symptom (0.55-0.65).
_SIMILARITY_LOW, _SIMILARITY_HIGH = 0.35, 0.6
_ONSET_SLACK = timedelta(minutes=5)      # clocks differ; a change this soon after onset may still be the cause
_PROMPT = timedelta(minutes=15)          # a change this close before the alert is as correlated as it gets
_HALF_LIFE_MINUTES = 120                 # after that, correlation halves every two hours


def score(candidate: Candidate, context: Context, *, precedents: int | None = None) -> Hypothesis:
    """`precedents`: how many past incidents confirm this cause; by default its `precedent` evidence."""
    if precedents is None:
        precedents = len({e.source or e.text for e in candidate.evidence if e.kind == "precedent"})
    factors = {
        "signal_strength": _signal(candidate, context),
        "temporal_correlation": _temporal(candidate, context),
        "precedent_frequency": 1 - 0.5 ** precedents,   # one confirmation is half the factor, three nearly all
        "evidence_quality": _evidence_quality(candidate, context),
        "validation_history": _validation(candidate, context),
    }
    confidence = sum(WEIGHTS[name] * value for name, value in factors.items())
    return Hypothesis(title=candidate.title, cause=candidate.cause, confidence=round(min(confidence, 1.0), 3),
                      evidence=candidate.evidence, factors={k: round(v, 3) for k, v in factors.items()})


def rank(candidates: list[Candidate], context: Context) -> tuple[list[Hypothesis], bool]:
    """Scored, best first, cut to what the policy shows; True as second value when inconclusive.

    Equal scores keep the provider's order (a stable sort), which is its own ranking. Causes ruled out earlier in
    the thread (`context.memory`) are scored down and come after every live one, shown with who ruled them out
    while there is room: the card says why they dropped instead of proposing them again as new."""
    scored = sorted((score(c, context) for c in candidates), key=lambda h: -h.confidence)
    unique: list[Hypothesis] = []
    for hypothesis in scored:
        if all(h.title != hypothesis.title for h in unique):
            unique.append(hypothesis)
    unique, ruled_out = rank_down(unique, context.memory)
    if not unique or all(h.confidence < INCONCLUSIVE_BELOW for h in unique):
        return (unique + ruled_out)[:SHOW_AT_MOST], True
    shown = [h for h in unique if h.confidence > SHOW_ABOVE][:SHOW_AT_MOST]
    return (shown + ruled_out)[:SHOW_AT_MOST], False


# --- the five factors --------------------------------------------------------------------------------------------

def _signal(candidate: Candidate, context: Context) -> float:
    """How specifically the evidence ties this cause to this alert, scaled gently by the alert's severity."""
    specificity = max((_specificity(e, context) for e in candidate.evidence), default=_NO_SPECIFIC_EVIDENCE)
    return specificity * (0.75 + 0.25 * _severity(context))


def _temporal(candidate: Candidate, context: Context) -> float:
    """How closely a change precedes the onset, combined with related alerts that fit this candidate."""
    change = max((_change_timing(e.at, context) for e in candidate.evidence if e.kind == "change" and e.at),
                 default=0.0)
    related = 0.4 if _fitting_related(candidate) else 0.0
    return 1 - (1 - change) * (1 - related)


def _evidence_quality(candidate: Candidate, context: Context) -> float:
    """Independent kinds of evidence, each with its provenance; the alert itself corroborates nothing."""
    kinds: dict[str, float] = {}
    for e in candidate.evidence:
        if not e.source:
            continue
        if e.kind == "change":
            value = _QUALITY["change"] * (1.0 if e.match == "service" else 0.7)
        elif e.kind == "runbook" and e.match == "alert_name":
            value = _QUALITY["runbook_alert_name"]
        elif e.kind == "runbook":
            base = _QUALITY["runbook_service"] if e.match == "service" else _QUALITY["runbook_text"]
            value = base + _QUALITY_TEXT_FIT * _text_fit(e, context)
        elif e.kind == "related_alert":
            value = _QUALITY["related_alert"] if e.match == "text" or _fitting_related(candidate) else 0.0
        elif e.kind in ("precedent", "metric"):
            value = _QUALITY[e.kind]
        else:
            continue
        kinds[e.kind] = max(kinds.get(e.kind, 0.0), value)
    symptom = _SYMPTOM_WITH_SOURCE if context.alert and context.alert.links else 0.0
    return min(1.0, symptom + sum(kinds.values()))


def _validation(candidate: Candidate, context: Context) -> float:
    """👍 / 👎 on this title (Laplace-smoothed, so no votes is 0.5 and one vote moves it a little)."""
    helpful, total = context.feedback.get(candidate.title, (0, 0))
    return (helpful + 1) / (total + 2)


# --- pieces ------------------------------------------------------------------------------------------------------

def _severity(context: Context) -> float:
    return _SEVERITY.get(context.alert.severity, 0.5) if context.alert else 0.6


def _specificity(e: Evidence, context: Context) -> float:
    if e.kind == "change":
        return _CHANGE_SPECIFICITY.get(e.match or "service", _CHANGE_SPECIFICITY["text"])
    if e.kind == "runbook":
        if e.match == "alert_name":
            return _RUNBOOK_FOR_ALERT
        floor, fit_adds = _RUNBOOK_BY_FIT["service" if e.match == "service" else "text"]
        return floor + fit_adds * _text_fit(e, context)
    if e.kind == "precedent":
        return _PRECEDENT_SPECIFICITY * max(_text_fit(e, context), 0.5)
    if e.kind == "metric":
        return _METRIC_SPECIFICITY
    return _NO_SPECIFIC_EVIDENCE


def _text_fit(e: Evidence, context: Context) -> float:
    """0..1: how far the cited document's similarity to the alert rises above what any document gets."""
    similarity = context.similarity.get(e.source or "")
    if similarity is None:
        return 0.3   # no measurement (a provider's own citation): modest, never strong
    return min(1.0, max(0.0, (similarity - _SIMILARITY_LOW) / (_SIMILARITY_HIGH - _SIMILARITY_LOW)))


def _change_timing(at, context: Context) -> float:
    """1.0 for a change in the 15 minutes before the alert, halving every two hours before that; a change after
    the onset (beyond clock slack) did not cause it."""
    gap = context.anchor_time - at
    if gap < -_ONSET_SLACK:
        return 0.0
    if gap < timedelta(0):
        return 0.3
    minutes = gap.total_seconds() / 60
    if gap <= _PROMPT:
        return 1.0
    return 0.5 ** ((minutes - _PROMPT.total_seconds() / 60) / _HALF_LIFE_MINUTES)


def _fitting_related(candidate: Candidate) -> bool:
    """Related alerts that fit this candidate specifically: ones that started after its change, or ones a provider
    matched to its wording (`match="text"`); a bare "N alerts on the service" fits every candidate equally."""
    has_change = any(e.kind == "change" for e in candidate.evidence)
    return any(e.kind == "related_alert" and (e.match == "text" or has_change) for e in candidate.evidence)
