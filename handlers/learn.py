"""`/warroom learn`: draft a runbook from a resolved incident, then Approve / Edit / Reject it.

`learn` (or the "Draft runbook" button on the resolve card) gathers what the incident left behind and posts a
draft (engine.drafting) in the incident's channel; `learn approve|reject N` and `learn edit N <yaml>` (or the
draft card's buttons) decide it. Only approvers of the incident's service approve or reject. Approval stores the
runbook as a new version (parent_version_id: the version the draft was based on, kept inactive), indexes it for
retrieval, writes the audit entry and moves the incident RESOLVED -> LEARNED, all in one transaction."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from engine import approvals, drafting, lifecycle
from engine.cards import Card, notice
from engine.ingest import content_hash, parse_runbook_yaml
from engine.models import Actor, Runbook, first_error
from engine.summaries import gather, _linkable
from handlers.services import Services
from storage import audit, outbox
from storage import drafts as draft_store
from storage import incidents as incident_store
from storage import runbooks as runbook_store

log = logging.getLogger(__name__)

USAGE = "`learn` drafts a runbook here; `learn approve N`, `learn reject N`, `learn edit N <runbook YAML>`"


@dataclass(frozen=True)
class Where:
    """Where the request came from, so the draft is posted (and refusals told) there."""

    platform: str
    channel: str
    thread_id: str | None = None
    thread_key: str | None = None


class Refused(ValueError):
    """A learn request that cannot be done; the message is one sentence for the person who asked. `audit`: the
    refusal is itself audited (a non-approver's approve), after the refused transaction rolled back."""

    def __init__(self, text: str, *, audit: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.audit = audit


def is_learn_command(text: str) -> bool:
    return bool(text.split()) and text.split()[0].lower() == "learn"


def handle_learn_command(services: Services, actor: Actor, text: str, where: Where) -> tuple[Card, bool]:
    """`learn [approve|reject N | edit N <yaml>]`; returns (card, public): refusals go only to the asker."""
    _, _, rest = text.strip().partition(" ")
    verb, _, rest = rest.strip().partition(" ")
    number, _, body = rest.strip().partition(" ") if verb.lower() != "edit" else _split_edit(rest)
    try:
        if not verb:
            return draft_for(services, actor, where, incident_id=None), True
        if verb.lower() not in ("approve", "reject", "edit") or not number.isdigit():
            raise Refused(f"Not understood: {USAGE}.")
        draft_id = int(number)
        if verb.lower() == "approve":
            return approve(services, actor, draft_id), True
        if verb.lower() == "reject":
            return reject(services, actor, draft_id), True
        return edit(services, actor, draft_id, body, where), True
    except Refused as exc:
        return _refused(services, actor, exc), False


def _refused(services: Services, actor: Actor, exc: Refused) -> Card:
    if exc.audit:
        with services.pool.connection() as conn, conn.transaction():
            audit.append(conn, actor=_who(actor), action="runbook_draft.refused",
                         subject=f"runbook_draft:{exc.audit.pop('draft_id')}", detail=exc.audit,
                         workspace=services.workspace)
    return notice("Runbook draft", str(exc), style="warning")


def _split_edit(rest: str) -> tuple[str, str, str]:
    """`N <yaml>` where the YAML may start on the next line (and keeps its newlines)."""
    rest = rest.lstrip(" ")
    head = rest.split(None, 1)
    number = head[0] if head else ""
    return number, " ", rest[len(number):].lstrip(" ").lstrip("\n")


# --- drafting ---------------------------------------------------------------------------------------------


def draft_for(services: Services, actor: Actor, where: Where, *, incident_id: int | None) -> Card:
    """Draft a runbook from this channel's (or the named) resolved incident and post it for review."""
    with services.pool.connection() as conn:
        incident = _incident(conn, services, where, incident_id)
        facts = _facts(conn, services, incident)
        ran_from = {r["runbook_id"] for r in conn.execute(
            """SELECT DISTINCT r.runbook_id FROM plans p JOIN runbooks r ON r.id = p.runbook_pk
               WHERE p.id = ANY(%s) AND EXISTS (SELECT 1 FROM plan_steps s WHERE s.plan_id = p.id
                                                AND s.status = 'succeeded')""",
            ([s["plan_id"] for s in facts.steps],))}
        candidates = runbook_store.runbooks_for(conn, alert_name=facts.alert_name, service=incident["service"],
                                                workspace=services.workspace)
    try:
        fresh = drafting.draft_runbook(facts)
    except drafting.NothingToLearn as exc:
        raise Refused(f"No draft: {exc}.") from exc
    base, score = _similar(services, candidates, fresh.runbook, ran_from)
    draft = drafting.draft_runbook(facts, base=base) if base else fresh
    yaml_text = draft.yaml()
    with services.pool.connection() as conn, conn.transaction():
        draft_id = draft_store.create(
            conn, incident_id=incident["id"], runbook_id=draft.runbook.metadata.id, yaml_text=yaml_text,
            citations=draft.citations, base_version_id=base["id"] if base else None, created_by=_who(actor),
            platform=where.platform, channel=where.channel, thread=where.thread_id, workspace=services.workspace)
        audit.append(conn, actor=_who(actor), action="runbook_draft.proposed", subject=f"runbook_draft:{draft_id}",
                     detail={"incident_id": incident["id"], "runbook_id": draft.runbook.metadata.id,
                             "base_version_id": base["id"] if base else None, "similarity": round(score, 3),
                             "content_hash": content_hash(yaml_text.encode())}, workspace=services.workspace)
        card = drafting.draft_card(draft_id=draft_id, incident=incident, yaml_text=yaml_text,
                                   citations=draft.citations, base=base, runbook_id=draft.runbook.metadata.id)
        _post(conn, where, card)
    return notice("Runbook draft posted", f"Draft #{draft_id} ({draft.runbook.metadata.id}) from incident "
                                          f"#{incident['id']} is waiting for review.", style="success")


def _incident(conn, services: Services, where: Where, incident_id: int | None) -> dict[str, Any]:
    if incident_id is not None:
        incident = incident_store.get(conn, incident_id)
    else:
        incident = incident_store.find_open(conn, channel=where.channel, thread=where.thread_key,
                                            workspace=services.workspace, states=lifecycle.CLOSED)
        if incident is None:
            incident = incident_store.find_open(conn, channel=where.channel, thread=where.thread_key,
                                                workspace=services.workspace)
    if incident is None:
        raise Refused("There is no incident here to learn from; `learn` drafts a runbook from a resolved one.")
    if incident["state"] not in lifecycle.CLOSED:
        raise Refused(f"Incident #{incident['id']} is {incident['state']}: resolve it first "
                      "(`/warroom resolve <why>`), then `learn` drafts a runbook from what worked.")
    return incident


def _facts(conn, services: Services, incident: dict[str, Any]) -> drafting.LearnFacts:
    """What the incident left behind: its steps with their audit ids, the root cause, people's notes, the bot's
    thread messages, 👍'd hypotheses and related documents."""
    summary = gather(conn, incident, workspace=services.workspace)
    resolved = next((t for t in reversed(summary.transitions) if t["to_state"] == lifecycle.RESOLVED), None)
    steps = conn.execute("SELECT * FROM plan_steps WHERE plan_id = ANY(%s) ORDER BY started_at NULLS LAST, id",
                         ([p["id"] for p in summary.plans],)).fetchall()
    notes = [{"actor": t["actor"], "note": t["note"], "audit_id": t.get("audit_id")} for t in summary.transitions
             if t["note"] and t["actor"] != "warroom" and t["from_state"] is not None
             and t["to_state"] != lifecycle.RESOLVED]
    # The alert and plan messages of the thread: linked when the adapter recorded a permalink, else by key.
    keys = dict.fromkeys([incident["thread"], *[p["message_key"] for p in summary.plans], *summary.messages])
    messages = [{"key": key, "link": _permalink(summary.messages.get(key))} for key in keys if key]
    alert_name = summary.alert["name"] if summary.alert else None
    facts = drafting.LearnFacts(
        incident={**incident, "resolved_at": resolved["at"] if resolved else None}, steps=steps,
        step_audits={s["id"]: [a["id"] for a in summary.audit_for(f"step:{s['id']}")] for s in steps},
        root_cause=resolved["note"] if resolved else None,
        root_cause_audit=resolved.get("audit_id") if resolved else None,
        notes=notes, messages=messages, confirmed=_confirmed(conn, summary, incident), alert_name=alert_name)
    facts.documents = _related(services, incident, alert_name, facts.root_cause)
    return facts


def _permalink(row: dict[str, Any] | None) -> str | None:
    link = (row or {}).get("permalink")
    return link if link and _linkable(link) else None


def _confirmed(conn, summary, incident: dict[str, Any]) -> list[dict[str, Any]]:
    """Hypotheses shown in this incident's thread that someone marked 👍 while it was open."""
    shown = {h["title"] for row in summary.annotations for b in row["card"].get("blocks", [])
             if b.get("type") == "hypotheses" for h in b.get("items", [])}
    if not shown:
        return []
    rows = conn.execute(
        "SELECT id, title, actor FROM hypothesis_feedback WHERE helpful AND title = ANY(%s) AND at >= %s "
        "AND (service IS NULL OR service IS NOT DISTINCT FROM %s) ORDER BY id",
        (list(shown), incident["created_at"], incident["service"])).fetchall()
    return [{"title": r["title"], "actor": r["actor"], "feedback_id": r["id"]} for r in rows]


def _related(services: Services, incident: dict[str, Any], alert_name: str | None, root_cause: str | None):
    from engine.knowledge import search

    limit = services.config.learning.related_documents
    if not limit:
        return []
    query = " ".join(filter(None, [alert_name, incident["title"], root_cause]))
    found = search(services.pool, services.embedder, query, top_k=limit + 2, workspace=services.workspace)
    # The incident's own precedent entry says nothing new about itself.
    return [c for c in found if c.source != f"incident:{incident['id']}"][:limit]


def _similar(services: Services, candidates: list[dict[str, Any]], fresh: Runbook,
             ran_from: set[str]) -> tuple[dict[str, Any] | None, float]:
    if not candidates:
        return None, 0.0
    texts = [drafting.runbook_text(c["spec"]) for c in candidates]
    spec = fresh.model_dump(mode="json", by_alias=True)
    vectors = services.embedder.embed([drafting.runbook_text(spec), *texts])
    return drafting.pick_base(candidates, vectors[1:], vectors[0],
                              threshold=services.config.learning.similar_runbook_threshold, ran_from=ran_from)


# --- deciding ---------------------------------------------------------------------------------------------


def approve(services: Services, actor: Actor, draft_id: int) -> Card:
    """Make the draft the runbook's next version, keep the old one, index it, audit, and mark the incident
    LEARNED. Refused for non-approvers, a decided draft, or a runbook that changed since the draft."""
    with services.pool.connection() as conn:
        draft, incident = _open_draft(conn, services, actor, draft_id, "approve")
    doc = parse_runbook_yaml(draft["yaml"], source=f"runbook:{draft['runbook_id']}",
                             digest=content_hash(draft["yaml"].encode()))
    from engine.knowledge import embed_parsed, store_in

    windows = embed_parsed(services.pool, services.embedder, doc, workspace=services.workspace)
    who = _who(actor)
    with services.pool.connection() as conn, conn.transaction():
        draft, incident = _open_draft(conn, services, actor, draft_id, "approve", lock=True)
        active = runbook_store.active_version(conn, draft["runbook_id"], workspace=services.workspace, lock=True)
        if (active["id"] if active else None) != draft["base_version_id"]:
            now = f"version {active['version']}" if active else "gone"
            raise Refused(f"Runbook {draft['runbook_id']} changed since draft #{draft_id} was written (it is now "
                          f"{now}); run `learn` again for a fresh draft.")
        _, (version_id, new) = store_in(conn, doc, windows, workspace=services.workspace)
        version = runbook_store.get_version(conn, version_id)
        draft_store.decide(conn, draft_id, status="approved", actor=who, version_id=version_id)
        audit.append(conn, actor=who, action="runbook_draft.approved", subject=f"runbook_draft:{draft_id}",
                     detail={"incident_id": incident["id"], "runbook_id": draft["runbook_id"],
                             "version": version["version"], "version_id": version_id,
                             "parent_version_id": version["parent_version_id"], "new_version": new},
                     workspace=services.workspace)
        moved = incident_store.advance(
            conn, incident["id"], from_=[lifecycle.RESOLVED], to=lifecycle.LEARNED, actor=who,
            note=f"runbook {draft['runbook_id']} v{version['version']} approved from draft #{draft_id}",
            workspace=services.workspace)
    if moved is not None:
        from handlers.incident import index_incident

        try:
            index_incident(services, incident["id"])
        except Exception:  # the approval stands; the precedent is re-indexed on the next move
            log.exception("indexing incident %s as a precedent failed", incident["id"])
    parent = f", replacing version {version['version'] - 1} (kept)" if version["parent_version_id"] else ""
    text = (f"Runbook `{draft['runbook_id']}` version {version['version']}{parent} is active"
            if new else f"Runbook `{draft['runbook_id']}` already says exactly this (version {version['version']})")
    return notice(f"Runbook draft #{draft_id} approved by {actor.name or who}",
                  text + (f"; incident #{incident['id']} is LEARNED." if moved else "."), style="success")


def reject(services: Services, actor: Actor, draft_id: int) -> Card:
    """Close the draft; nothing is created. Audited."""
    who = _who(actor)
    with services.pool.connection() as conn, conn.transaction():
        draft, incident = _open_draft(conn, services, actor, draft_id, "reject", lock=True)
        draft_store.decide(conn, draft_id, status="rejected", actor=who)
        audit.append(conn, actor=who, action="runbook_draft.rejected", subject=f"runbook_draft:{draft_id}",
                     detail={"incident_id": incident["id"], "runbook_id": draft["runbook_id"]},
                     workspace=services.workspace)
    return notice(f"Runbook draft #{draft_id} rejected by {actor.name or who}",
                  "Nothing was stored; the runbooks are as they were.", style="muted")


def edit(services: Services, actor: Actor, draft_id: int, yaml_text: str, where: Where) -> Card:
    """A reviewer's corrected YAML becomes a new proposed revision (the old one superseded). It must validate
    as a runbook, keep the draft's runbook id, and name only connectors and targets warroom knows."""
    runbook = _validated(services, yaml_text)
    who = _who(actor)
    with services.pool.connection() as conn, conn.transaction():
        draft, incident = _open_draft(conn, services, actor, draft_id, "edit", lock=True)
        if runbook.metadata.id != draft["runbook_id"]:
            raise Refused(f"metadata.id must stay {draft['runbook_id']!r} (the runbook this draft "
                          f"{'updates' if draft['base_version_id'] else 'creates'}).")
        yaml_text = drafting.to_yaml(runbook)
        citations = draft["citations"] + [{"kind": "edit", "fact": f"edited by {who}"}]
        draft_store.decide(conn, draft_id, status="superseded", actor=who)
        new_id = draft_store.create(
            conn, incident_id=incident["id"], runbook_id=draft["runbook_id"], yaml_text=yaml_text,
            citations=citations, base_version_id=draft["base_version_id"], created_by=who, revision_of=draft_id,
            platform=where.platform, channel=where.channel, thread=where.thread_id, workspace=services.workspace)
        audit.append(conn, actor=who, action="runbook_draft.edited", subject=f"runbook_draft:{new_id}",
                     detail={"revision_of": draft_id, "incident_id": incident["id"],
                             "content_hash": content_hash(yaml_text.encode())}, workspace=services.workspace)
        base = runbook_store.get_version(conn, draft["base_version_id"]) if draft["base_version_id"] else None
        _post(conn, where, drafting.draft_card(draft_id=new_id, incident=incident, yaml_text=yaml_text,
                                               citations=citations, base=base, runbook_id=draft["runbook_id"],
                                               revision_of=draft_id))
    return notice("Runbook draft revised", f"Draft #{new_id} replaces draft #{draft_id}; it waits for review.",
                  style="success")


def _validated(services: Services, yaml_text: str) -> Runbook:
    if not yaml_text.strip():
        raise Refused("To edit, send `/warroom learn edit N` followed by the corrected runbook YAML "
                      "(it is validated before it is stored).")
    yaml_text = yaml_text.strip().removeprefix("```yaml").removeprefix("```").removesuffix("```")
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise Refused(f"Not stored: not valid YAML: {str(exc).splitlines()[0]}.") from exc
    if not isinstance(data, dict):
        raise Refused("Not stored: a runbook must be a YAML mapping.")
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        raise Refused(f"Not stored: {first_error(exc)}.") from exc
    ids = [s.id for s in runbook.steps]
    if len(ids) != len(set(ids)):
        raise Refused("Not stored: step ids must be unique.")
    unknown = sorted({s.target for s in runbook.steps if s.target and s.target not in services.config.targets})
    if unknown and services.config.targets:
        raise Refused(f"Not stored: unknown target(s) {', '.join(unknown)} (not in warroom.yml targets).")
    return runbook


def _open_draft(conn, services: Services, actor: Actor, draft_id: int, action: str,
                *, lock: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The draft, still proposed, and its incident; approve and reject only by an approver of its service."""
    draft = draft_store.get(conn, draft_id, lock=lock)
    if draft is None or draft["workspace"] != services.workspace:
        raise Refused(f"There is no runbook draft #{draft_id}.")
    if draft["status"] != "proposed":
        raise Refused(f"Runbook draft #{draft_id} is already {draft['status']}"
                      f"{' by ' + draft['decided_by'] if draft['decided_by'] else ''}; nothing to {action}.")
    incident = incident_store.get(conn, draft["incident_id"])
    policy = services.config.policy
    if action in ("approve", "reject") and not approvals.is_approver(actor, policy, incident["service"],
                                                                      incident["environment"]):
        names, source = approvals.approvers_for(policy, incident["service"], incident["environment"])
        done = {"approve": "approved", "reject": "rejected"}[action]
        raise Refused(f"Not {done}: {actor.name or actor.id} is not an approver ({source}: {', '.join(names)}).",
                      audit={"draft_id": draft_id, "decision": action, "reason": "not an approver",
                             "identity": approvals.identity(actor)})
    return draft, incident


# --- chat plumbing ------------------------------------------------------------------------------------------


def click(services: Services, actor: Actor, *, action: str, incident_id: int, draft_id: int | None, where: Where,
          yaml_text: str = "") -> tuple[Card, bool]:
    """A button on the resolve card (draft) or a draft card (approve, edit, reject); returns (card, public)."""
    try:
        if action == "draft":
            return draft_for(services, actor, where, incident_id=incident_id), True
        if draft_id is None:
            raise Refused("That button names no draft.")
        if action == "approve":
            return approve(services, actor, draft_id), True
        if action == "reject":
            return reject(services, actor, draft_id), True
        if action == "edit":
            return edit(services, actor, draft_id, yaml_text, where), True
        raise Refused(f"Unknown runbook draft action {action!r}.")
    except Refused as exc:
        return _refused(services, actor, exc), False


def click_and_reply(services: Services, actor: Actor, *, action: str, incident_id: int, draft_id: int | None,
                    where: Where, yaml_text: str = "") -> str:
    """A button click from a chat adapter: do it, post the outcome (refusals only to the clicker), and return
    its text for platforms that answer the click itself (Teams invokes)."""
    card, public = click(services, actor, action=action, incident_id=incident_id, draft_id=draft_id, where=where,
                         yaml_text=yaml_text)
    with services.pool.connection() as conn, conn.transaction():
        outbox.enqueue(conn, platform=where.platform, channel=where.channel, op="post" if public else "ephemeral",
                       recipient=None if public else actor.id, thread_id=where.thread_id,
                       card=json.loads(card.model_dump_json()))
    first = next((b.text for b in card.blocks if getattr(b, "text", "")), "")
    return f"{card.title}: {first}" if first else card.title


def _post(conn, where: Where, card: Card) -> None:
    outbox.enqueue(conn, platform=where.platform, channel=where.channel, op="post", thread_id=where.thread_id,
                   card=json.loads(card.model_dump_json()))


def _who(actor: Actor) -> str:
    return actor.email or actor.id

