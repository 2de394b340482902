"""Runbook drafts from what actually happened in a resolved incident. Pure: the handler gathers the facts.

What goes in, and where each fact lands:
- a step that ran and succeeded becomes a runbook step (its parameters, rollback and verify as planned);
- a step that failed, was interrupted or only dry-ran becomes a line in the description ("tried X: failed ...");
- the root cause given on resolve, the people's notes on the timeline, 👍'd hypotheses and related documents
  are written into the description as short lines, each naming its source;
- every one of those facts is also a citation (audit ids, a message link, a document and chunk id), stored with
  the draft and shown on its card.
When the incident updates an existing runbook, its steps are kept in their order and the new executed steps are
added after them; the runbook keeps its id (approval makes the next version). Outputs never go in: only the
worker's one-line summary, which is redacted already, clipped short.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import yaml

from engine.models import Citation, Runbook, RunbookStep

SUMMARY_CHARS = 160          # a step's result summary in the description: enough to say why, never an output
MAX_NOTES = 10
LEARNED_HEADER = "Learned from incident"


@dataclass
class LearnFacts:
    """What an incident left behind that a runbook can be written from."""

    incident: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)         # plan_steps rows, in the order they ran
    step_audits: dict[int, list[int]] = field(default_factory=dict)   # step id -> its audit ids
    root_cause: str | None = None
    root_cause_audit: int | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)         # timeline notes: {actor, note, audit_id}
    messages: list[dict[str, Any]] = field(default_factory=list)      # {key, link}: the thread's bot messages
    confirmed: list[dict[str, Any]] = field(default_factory=list)     # 👍 hypotheses: {title, actor, feedback_id}
    documents: list[Citation] = field(default_factory=list)
    alert_name: str | None = None


@dataclass
class Draft:
    runbook: Runbook
    citations: list[dict[str, Any]]

    def yaml(self) -> str:
        return to_yaml(self.runbook)


def to_yaml(runbook: Runbook) -> str:
    return yaml.safe_dump(runbook.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False,
                          allow_unicode=True, width=100)


def draft_runbook(facts: LearnFacts, *, base: dict[str, Any] | None = None) -> Draft:
    """The draft: an update of `base` (a runbooks row with its `spec`) when given, else a new runbook."""
    citations: list[dict[str, Any]] = []
    incident = facts.incident
    executed, notes = [], []
    for step in facts.steps:
        audits = facts.step_audits.get(step["id"], [])
        if step.get("kind", "step") == "rollback":
            if step["status"] in ("succeeded", "failed"):
                notes.append(f"rollback `{step['key']}` ran after a failure: {step['status']}"
                             f"{_result(step)} ({_audits(audits)})")
                citations.append(_cite("rollback", f"rollback {step['key']} {step['status']}", audits=audits))
            continue
        if step["status"] == "succeeded" and not _dry_run(step):
            executed.append(_runbook_step(step))
            citations.append(_cite("step", f"{step['key']}: {step['title']} succeeded", step=step["key"],
                                   audits=audits))
        elif step["status"] in ("failed", "interrupted") or (step["status"] == "succeeded" and _dry_run(step)):
            why = "dry run only" if _dry_run(step) else step["status"]
            notes.append(f"tried `{step['key']}` ({step['title']}): {why}{_result(step)} ({_audits(audits)})")
            citations.append(_cite("note", f"tried {step['key']}: {why}", step=step["key"], audits=audits))
    if not executed:
        raise NothingToLearn(f"incident #{incident['id']} ran no step successfully through warroom, so there is "
                             "nothing executable to write down")

    lines = [f"{LEARNED_HEADER} #{incident['id']} ({incident['title']}, resolved "
             f"{_day(incident.get('resolved_at') or incident.get('updated_at'))})."]
    if facts.root_cause:
        lines.append(f"Root cause (given on resolve): {_clip(facts.root_cause, 300)} "
                     f"(audit #{facts.root_cause_audit})" if facts.root_cause_audit else
                     f"Root cause (given on resolve): {_clip(facts.root_cause, 300)}")
        citations.append(_cite("root_cause", facts.root_cause, audits=[facts.root_cause_audit]
                               if facts.root_cause_audit else []))
    for h in facts.confirmed:
        lines.append(f"Confirmed hypothesis: {_clip(h['title'], 200)} (👍 by {h['actor']})")
        citations.append(_cite("hypothesis", h["title"], feedback_id=h.get("feedback_id")))
    for n in facts.notes[:MAX_NOTES]:
        lines.append(f"Note by {n['actor']}: {_clip(n['note'], 200)} (audit #{n['audit_id']})")
        citations.append(_cite("note", n["note"], audits=[n["audit_id"]] if n.get("audit_id") else []))
    lines += [f"Tried and did not work: {n}" if n.startswith("tried") else n for n in notes[:MAX_NOTES]]
    for m in facts.messages:
        citations.append(_cite("message", m["key"], link=m.get("link")))
    for doc in facts.documents:
        lines.append(f"Related: {doc.title} (doc {doc.document_id}, chunk {doc.chunk_id})")
        citations.append(_cite("document", doc.title, document_id=doc.document_id, chunk_id=doc.chunk_id,
                               source=doc.source))

    learned = "\n".join(f"- {line}" if i else line for i, line in enumerate(lines))
    if base is not None:
        spec = base["spec"]
        steps = _merge([RunbookStep.model_validate(s) for s in spec["steps"]], executed)
        description = (spec.get("description", "").rstrip() + "\n\n" + learned).strip()
        metadata = {**spec["metadata"]}
        metadata["services"] = _union(metadata.get("services", []), [incident.get("service")])
        metadata["alerts"] = _union(metadata.get("alerts", []), [facts.alert_name])
    else:
        steps = executed
        description = learned
        name = facts.alert_name or incident["title"]
        metadata = {"id": slug(name), "title": _clip(incident["title"], 120),
                    "services": _union([], [incident.get("service")]), "alerts": _union([], [facts.alert_name]),
                    "tags": ["learned"]}
    runbook = Runbook.model_validate({"apiVersion": "warroom/v1", "kind": "Runbook", "metadata": metadata,
                                      "description": description + "\n",
                                      "steps": [s.model_dump(by_alias=True, exclude_none=True) for s in steps]})
    return Draft(runbook=runbook, citations=citations)


class NothingToLearn(ValueError):
    """The incident left nothing a runbook could be made of; the message says why."""


def _runbook_step(step: dict[str, Any]) -> RunbookStep:
    data = {"id": step["key"], "title": step["title"], "connector": step["connector"], "risk": step["risk"],
            "with": step.get("params") or {}}
    if step.get("target"):
        data["target"] = step["target"]
    for name in ("rollback", "verify"):
        if step.get(name):
            data[name] = step[name]
    return RunbookStep.model_validate(data)


def _merge(existing: list[RunbookStep], executed: list[RunbookStep]) -> list[RunbookStep]:
    """The runbook's steps as they are, then each executed step it does not have yet. A step that ran under an
    id the runbook uses for something else is added under a new id rather than replacing it."""
    out = list(existing)
    ids = {s.id for s in out}
    for step in executed:
        same = next((s for s in out if s.id == step.id), None)
        if same is not None and _same_action(same, step):
            continue
        new_id, n = step.id, 2
        while new_id in ids:
            new_id, n = f"{step.id[:60]}-{n}", n + 1
        out.append(step.model_copy(update={"id": new_id}))
        ids.add(new_id)
    return out


def _same_action(a: RunbookStep, b: RunbookStep) -> bool:
    return (a.connector, a.target, a.with_) == (b.connector, b.target, b.with_)


# --- the similar runbook ----------------------------------------------------------------------------------


def runbook_text(spec: dict[str, Any]) -> str:
    """What two runbooks are compared on: title, alerts, services, description opening, step titles."""
    meta = spec["metadata"]
    opening = (spec.get("description") or "").strip().split("\n\n")[0]
    return "\n".join([meta["title"], " ".join(meta.get("alerts", [])), " ".join(meta.get("services", [])),
                      opening[:500], *[s["title"] for s in spec.get("steps", [])]])


def pick_base(candidates: list[dict[str, Any]], vectors: np.ndarray, draft_vector: np.ndarray, *,
              threshold: float, ran_from: set[str]) -> tuple[dict[str, Any] | None, float]:
    """The active runbook the draft should update: the one whose steps the incident ran, else the candidate
    (same alert or service) most similar to the draft, when the similarity reaches `threshold`."""
    for row in candidates:
        if row["runbook_id"] in ran_from:
            return row, 1.0
    best, best_score = None, -1.0
    for row, vector in zip(candidates, vectors):
        score = _cosine(vector, draft_vector)
        if score > best_score:
            best, best_score = row, score
    return (best, best_score) if best is not None and best_score >= threshold else (None, max(best_score, 0.0))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na and nb else 0.0


# --- small helpers -------------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """`PaymentsHighErrorRate` -> `payments-high-error-rate`: a metadata.id the schema accepts."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name)
    text = re.sub(r"[^A-Za-z0-9]+", "-", words).strip("-").lower()
    return (text or "learned-runbook")[:120]


def _cite(kind: str, fact: str, *, audits: list[int] | None = None, **where: Any) -> dict[str, Any]:
    return {"kind": kind, "fact": _clip(fact, 200), **({"audit_ids": audits} if audits else {}),
            **{k: v for k, v in where.items() if v is not None}}


def _audits(ids: list[int]) -> str:
    return "audit " + ", ".join(f"#{i}" for i in ids) if ids else "no audit entry"


def _result(step: dict[str, Any]) -> str:
    summary = (step.get("result") or {}).get("summary") or step.get("refusal")
    return f": {_clip(summary, SUMMARY_CHARS)}" if summary else ""


def _dry_run(step: dict[str, Any]) -> bool:
    return bool(((step.get("result") or {}).get("data") or {}).get("dry_run"))


def _union(items: list[str], more: list[str | None]) -> list[str]:
    return list(dict.fromkeys([*items, *[m for m in more if m]]))


def _day(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d}" if at else "recently"


def _clip(text: Any, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the review card ---------------------------------------------------------------------------------------

CITED_ON_CARD = 20


def cite_line(citation: dict[str, Any]) -> str:
    """One citation as mrkdwn, in the postmortem's style: audit ids, a link to the message, doc and chunk."""
    from engine.summaries import cite_audits, esc, _linkable

    where = []
    if citation.get("audit_ids"):
        where.append(cite_audits(citation["audit_ids"]))
    link = citation.get("link")
    if citation["kind"] == "message":
        where.append(f"<{link}|{esc(citation['fact'])}>" if link and _linkable(link) else f"`{esc(citation['fact'])}`")
        return f"• thread message: {where[-1]}"
    if citation.get("document_id") is not None:
        where.append(f"doc {citation['document_id']}, chunk {citation['chunk_id']}")
    if citation.get("feedback_id") is not None:
        where.append(f"👍 feedback #{citation['feedback_id']}")
    return f"• {citation['kind'].replace('_', ' ')}: {esc(_clip(citation['fact'], 120))} — " + (
        "; ".join(where) or "no recorded source")


def draft_card(*, draft_id: int, incident: dict[str, Any], yaml_text: str, citations: list[dict[str, Any]],
               base: dict[str, Any] | None, runbook_id: str, revision_of: int | None = None):
    """The draft as posted for review: what it is, its YAML, where each fact came from, and the buttons."""
    from engine.cards import Card, LearnBlock, TextBlock
    from engine.summaries import esc

    what = (f"An update of runbook `{esc(runbook_id)}` (now version {base['version']}): its steps are kept and "
            "the steps that worked in this incident are added." if base else
            f"A new runbook `{esc(runbook_id)}`: no existing runbook is similar enough to update.")
    edited = f" Revised from draft #{revision_of}." if revision_of else ""
    lines = [cite_line(c) for c in citations[:CITED_ON_CARD]]
    if len(citations) > CITED_ON_CARD:
        lines.append(f"• … {len(citations) - CITED_ON_CARD} more (stored with draft #{draft_id})")
    return Card(kind="runbook_draft", title=f"Runbook draft #{draft_id} from incident #{incident['id']}", blocks=[
        TextBlock(text=f"{what}{edited} It is not active and never runs until an approver approves it; "
                       f"approval makes it a new version and keeps the old one."),
        TextBlock(text=f"```\n{esc(yaml_text.rstrip())}\n```"),
        TextBlock(text="*Sources*\n" + ("\n".join(lines) or "• none")),
        LearnBlock(incident_id=incident["id"], draft_id=draft_id, actions=["approve", "edit", "reject"],
                   yaml=yaml_text)])
