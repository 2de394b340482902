"""Context -> model request. Every value is redacted before it is rendered and the rendered text once more
after, and data from alerts, chat and documents is quoted as JSON inside tags (`tojson` escapes `<` and
`>`, so quoted text cannot close its tag and pose as instructions)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import prompts
from engine.context import Context
from engine.llm.base import Request, ToolSpec
from engine.llm.outputs import OUTPUTS
from engine.models import Evidence, Hypothesis, Intent
from engine.plan_schema import MAX_STEPS as MAX_PLAN_STEPS
from engine.redact import MASK, redact, redact_obj

MAX_HYPOTHESES = 5
MAX_CHANGES = 10
MAX_RUNBOOKS = 5
MAX_DOCUMENTS = 5
DOC_CHARS = 800
RUNBOOK_CHARS = 1500

TOOL_DESCRIPTIONS = {
    "propose_hypotheses": "Record candidate causes of the incident, each tied to evidence ids from the context.",
    "classify_intent": "Record the intent of a chat message sent to the incident bot.",
    "proposed_plan": "Record a short plan of steps on configured targets; the bot validates every step.",
}
INTENT_MEANINGS = {
    Intent.diagnose: "find out why something is broken",
    Intent.runbook: "show the runbook / procedure for a problem",
    Intent.query_metrics: "show metrics, graphs or numbers",
    Intent.run_action: "run an operation (restart, rollback, scale, ...)",
    Intent.incident_status: "what is the state of the incident",
    Intent.acknowledge: "acknowledge the alert or incident",
    Intent.resolve: "mark the incident resolved",
    Intent.escalate: "page or escalate to someone",
    Intent.help: "how to use the bot",
    Intent.unknown: "none of the above",
}


def tool(name: str) -> ToolSpec:
    return ToolSpec(name=name, description=TOOL_DESCRIPTIONS[name], input_schema=OUTPUTS[name].model_json_schema())


def system_prompt() -> str:
    return prompts.render("system", mask=MASK)


@dataclass(frozen=True)
class HypothesesPrompt:
    request: Request
    evidence: dict[str, Evidence]   # id the model may cite -> the fact, with provenance, that id stands for
    symptoms: list[Evidence]        # what every candidate carries (the alert or question itself)


def hypotheses_prompt(context: Context) -> HypothesesPrompt:
    catalogue, symptoms = evidence_catalogue(context)
    stable = stable_blocks(context)
    alert = context.alert
    volatile = prompts.render(
        "hypotheses", tool="propose_hypotheses", max_hypotheses=MAX_HYPOTHESES,
        alert=redact_obj(_alert(alert)) if alert else None,
        question=redact(context.question) if context.question else None,
        service=context.service, environment=context.environment, now=context.now.isoformat(),
        related_alerts=redact_obj([_related(r) for r in context.related_alerts[:10]]),
        changes=redact_obj([{"id": ref, "kind": c.kind, "service": c.service, "version": c.version,
                             "summary": c.summary, "author": c.author, "at": c.at.isoformat()}
                            for ref, c in _refs("C", prompt_changes(context))]),
        evidence=[{"id": ref, "text": redact(e.text)} for ref, e in catalogue.items()],
        conversation=redact_obj(context.memory.conversation) if context.memory else [])
    request = Request(system=system_prompt(), stable=stable, volatile=_clean(volatile),
                      tool=tool("propose_hypotheses"))
    return HypothesesPrompt(request=request, evidence=catalogue, symptoms=symptoms)


def stable_blocks(context: Context) -> list[str]:
    """The runbooks and documentation for this context: the same text for every call about it, so cacheable."""
    stable = []
    runbooks = [_runbook(ref, row) for ref, row in _refs("R", context.runbooks[:MAX_RUNBOOKS])]
    if runbooks:
        stable.append(_clean(prompts.render("runbooks", runbooks=runbooks)))
    documentation = [{"id": ref, "title": c.title, "source": c.source, "text": c.text[:DOC_CHARS]}
                     for ref, c in _refs("D", context.citations[:MAX_DOCUMENTS])]
    precedents = [{"title": p.title, "resolution": p.resolution, "source": p.source} for p in context.precedents]
    if documentation or precedents:
        stable.append(_clean(prompts.render("knowledge", documentation=redact_obj(documentation),
                                            precedents=redact_obj(precedents))))
    return stable


def plan_request(context: Context, *, hypotheses: list[Hypothesis], targets: dict[str, str]) -> Request:
    """Asked only when no runbook matches. Targets go by name and connector only: hosts, URLs and credential
    references stay in warroom.yml."""
    volatile = prompts.render(
        "plan", tool="proposed_plan", max_steps=MAX_PLAN_STEPS,
        alert=redact_obj(_alert(context.alert)) if context.alert else None,
        question=redact(context.question) if context.question else None,
        service=context.service, environment=context.environment,
        hypotheses=[{"title": redact(h.title), "cause": redact(h.cause), "confidence": h.confidence}
                    for h in hypotheses],
        targets=[{"name": name, "connector": connector} for name, connector in sorted(targets.items())])
    return Request(system=system_prompt(), stable=stable_blocks(context), volatile=_clean(volatile),
                   tool=tool("proposed_plan"))


def intent_request(text: str) -> Request:
    volatile = prompts.render("classify_intent", tool="classify_intent", message=redact(text),
                              intents={i.value: meaning for i, meaning in INTENT_MEANINGS.items()})
    return Request(system=system_prompt(), stable=[], volatile=_clean(volatile), tool=tool("classify_intent"),
                   max_tokens=200)


def evidence_catalogue(context: Context) -> tuple[dict[str, Evidence], list[Evidence]]:
    """The facts a model may cite, each under a short id; and the symptom evidence every candidate carries."""
    catalogue: dict[str, Evidence] = {}
    symptoms: list[Evidence] = []
    if context.alert:
        alert = context.alert
        symptom = Evidence(kind="alert", text=f"{alert.name} ({alert.severity}): {alert.summary}",
                           source=alert.links[0].url if alert.links else f"{alert.source} alert",
                           at=alert.starts_at, match="alert_name")
        catalogue["A1"] = symptom
        symptoms.append(symptom)
    elif context.question:
        symptom = Evidence(kind="thread", text=context.question, source="question")
        catalogue["Q1"] = symptom
        symptoms.append(symptom)
    for ref, item in _refs("L", context.live):  # live query values: symptoms, carried by every candidate
        catalogue[ref] = item
        symptoms.append(item)
    if context.related_alerts:
        names = sorted({r["name"] for r in context.related_alerts})
        catalogue["RA1"] = Evidence(kind="related_alert", text=f"{len(context.related_alerts)} related alert(s) on "
                                    f"{context.service}: {', '.join(names[:5])}", source="alerts", match="service")
    for ref, change in _refs("C", prompt_changes(context)):
        label = f" {change.version}" if change.version else ""
        catalogue[ref] = Evidence(kind="change", text=f"{change.kind} {change.service}{label}: {change.summary}",
                                  source=change.source
                                  or f"change by {change.author or 'unknown'} at {change.at.isoformat()}",
                                  at=change.at, match="service")
    sources = {c.document_id: c.source for c in context.citations}
    for ref, row in _refs("R", context.runbooks[:MAX_RUNBOOKS]):
        match = row.get("match", "text")
        catalogue[ref] = Evidence(kind="runbook", text=f"runbook: {row['spec']['metadata']['title']}",
                                  source=sources.get(row.get("document_id"),
                                                     f"runbook:{row['runbook_id']} v{row['version']}"),
                                  match=match, score=row.get("retrieval_score"))
    for ref, citation in _refs("D", context.citations[:MAX_DOCUMENTS]):
        catalogue[ref] = Evidence(kind="runbook", text=f"documentation matches: {citation.title}",
                                  source=citation.source, match="text", score=citation.score)
    return catalogue, symptoms


def prompt_changes(context: Context) -> list[Any]:
    """The service's own changes first, then changes on other services in the window (a dependency's deploy is
    often the cause); the same list, in the same order, for the prompt and for the ids the model cites."""
    return [*context.changes, *context.nearby_changes][:MAX_CHANGES]


def _refs(prefix: str, items: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{prefix}{i}", item) for i, item in enumerate(items, 1)]


def _alert(alert) -> dict[str, Any]:
    data = alert.model_dump(mode="json", exclude={"fingerprint", "group_key"})
    return {k: v for k, v in data.items() if v not in (None, "", [], {})}


def _related(row: dict[str, Any]) -> dict[str, Any]:
    payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
    return {"name": row.get("name"), "status": row.get("status"), "severity": row.get("severity"),
            "summary": str(payload.get("summary") or "")[:300],
            "received_at": row["received_at"].isoformat() if row.get("received_at") else None}


def _runbook(ref: str, row: dict[str, Any]) -> dict[str, Any]:
    spec = row["spec"]
    return redact_obj({
        "id": ref, "runbook": spec["metadata"]["id"], "title": spec["metadata"]["title"],
        "services": spec["metadata"].get("services", []), "alerts": spec["metadata"].get("alerts", []),
        "description": (spec.get("description") or "")[:RUNBOOK_CHARS],
        # Titles only: step parameters are for the planner, and may name hosts and commands.
        "steps": [{"id": s["id"], "title": s["title"], "connector": s["connector"], "risk": s.get("risk", "read_only")}
                  for s in spec.get("steps", [])]})


def _clean(text: str) -> str:
    """The second pass: whatever a template added around the data is checked too."""
    return redact(text)
