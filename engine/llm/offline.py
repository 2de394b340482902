"""The deterministic provider: hypotheses built only from evidence in the context. No network, no model.

It is the default with no API key and the fallback whenever a model fails."""
from __future__ import annotations

import re

from engine.context import Context
from engine.llm import Candidate
from engine.models import Evidence

MAX_RUNBOOK_CANDIDATES = 3


class OfflineProvider:
    name = "offline"

    def hypotheses(self, context: Context) -> list[Candidate]:
        out: list[Candidate] = []
        symptom = _symptom_evidence(context)
        for change in context.changes[:3]:
            minutes = int((context.anchor_time - change.at).total_seconds() // 60)
            when = f"{minutes} min before the alert" if minutes >= 0 else "just after the alert started"
            label = f" {change.version}" if change.version else ""
            out.append(Candidate(
                title=f"Recent {change.kind.replace('_', ' ')} of {change.service}{label}",
                cause=f"{change.summary} ({when}{', by ' + change.author if change.author else ''}).",
                evidence=[Evidence(kind="change", text=f"{change.kind} {change.service}{label}: {change.summary}",
                                   source=f"change by {change.author or 'unknown'} at {change.at.isoformat()}",
                                   at=change.at, match="service"), *symptom]))
        for row in context.runbooks[:MAX_RUNBOOK_CANDIDATES]:
            spec = row["spec"]
            cause = _first_cause(spec.get("description", "")) or spec["metadata"]["title"]
            match = row.get("match", "text")
            why = {"alert_name": f"runbook is written for alert {context.alert.name if context.alert else ''}",
                   "service": f"runbook covers service {context.service}",
                   "text": "runbook text matches the symptoms"}[match]
            out.append(Candidate(
                title=spec["metadata"]["title"],
                cause=cause,
                evidence=[Evidence(kind="runbook", text=why, source=_runbook_source(row, context), match=match,
                                   score=row.get("retrieval_score")), *symptom]))
        for citation in context.citations:
            if any(c.title == citation.title for c in out) or len(out) >= 5:
                continue
            if citation.source.endswith((".yml", ".yaml")):
                continue
            out.append(Candidate(
                title=citation.title,
                cause=_first_cause(citation.text) or citation.title,
                evidence=[Evidence(kind="runbook", text=f"documentation matches: {citation.title}",
                                   source=citation.source, match="text", score=citation.score), *symptom]))
        return out


def _symptom_evidence(context: Context) -> list[Evidence]:
    items = []
    if context.alert:
        alert = context.alert
        items.append(Evidence(kind="alert", text=f"{alert.name} ({alert.severity}): {alert.summary}",
                              source=alert.links[0].url if alert.links else f"{alert.source} alert",
                              at=alert.starts_at, match="alert_name"))
    elif context.question:
        items.append(Evidence(kind="thread", text=context.question, source="question"))
    if context.related_alerts:
        names = sorted({r["name"] for r in context.related_alerts})
        items.append(Evidence(kind="related_alert", text=f"{len(context.related_alerts)} related alert(s) on "
                              f"{context.service}: {', '.join(names[:5])}", source="alerts", match="service"))
    return items


_CAUSE_HINT = re.compile(r"(?:usual(?:ly)?|common|likely|typical)\s+causes?\b[^:.]*[:.]?\s*(.+)", re.I)


def _first_cause(text: str) -> str:
    """The first sentence after a 'usual causes' phrase, else the first sentence of the text."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    match = _CAUSE_HINT.search(flat)
    sentence_source = match.group(1) if match else flat
    sentence = re.split(r"(?<=[.!?])\s", sentence_source, maxsplit=1)[0]
    return sentence[:300]


def _runbook_source(row: dict, context: Context) -> str:
    for citation in context.citations:
        if citation.document_id == row.get("document_id"):
            return citation.source
    return f"runbook:{row['runbook_id']} v{row['version']}"
