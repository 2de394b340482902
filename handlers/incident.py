"""The incident lifecycle from chat: status, ack, resolve, escalate. DETECTED -> ACKNOWLEDGED ->
INVESTIGATING -> MITIGATED -> RESOLVED -> LEARNED; every move says who and when, in the timeline and the
audit log. Incidents are opened from critical alerts (handlers.alert)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from engine import summaries
from engine.cards import Card, notice
from engine.models import ChatMessage, Intent
from engine.precedents import load_incident_document
from handlers.services import Services
from storage import audit, outbox
from storage import incidents as incident_store

log = logging.getLogger(__name__)

ACK_FROM = ["DETECTED"]
RESOLVE_FROM = ["DETECTED", "ACKNOWLEDGED", "INVESTIGATING", "MITIGATED"]


def who(message: ChatMessage) -> str:
    return message.user.email or message.user.id


def handle_lifecycle(services: Services, message: ChatMessage, intent: Intent, *, thread_key: str | None,
                     reason: str = "") -> tuple[Card, bool]:
    """Apply a lifecycle command; returns (card, public): errors go only to the person who asked.
    A resolved incident is indexed as a precedent once the transition is committed."""
    resolved: list[int] = []
    card, public = _apply(services, message, intent, thread_key=thread_key, reason=reason, resolved=resolved)
    for incident_id in resolved:
        try:
            index_incident(services, incident_id)
        except Exception:  # the incident is resolved either way; indexing is retried on the next resolve/learn
            log.exception("indexing incident %s as a precedent failed", incident_id)
    return card, public


def index_incident(services: Services, incident_id: int) -> None:
    """Make a resolved incident findable as knowledge (source `incident:<id>`), replacing an older version."""
    from engine.knowledge import store_parsed  # keeps the chat path free of ingest imports until needed

    doc = load_incident_document(services.pool, incident_id)
    if doc is not None:
        store_parsed(services.pool, services.embedder, doc, workspace=services.workspace)


def _apply(services: Services, message: ChatMessage, intent: Intent, *, thread_key: str | None, reason: str,
           resolved: list[int]) -> tuple[Card, bool]:
    with services.pool.connection() as conn, conn.transaction():
        incident = incident_store.find_open(conn, channel=message.channel, thread=thread_key,
                                            workspace=services.workspace)
        if incident is None:
            return notice("No open incident here",
                          "There is no open incident in this channel. Incidents open from critical alerts; "
                          "use `/warroom diagnose <symptom>` to investigate without one.", style="muted"), False
        label = f"incident #{incident['id']} ({incident['title']})"
        if intent is Intent.incident_status:
            return status_card(conn, incident, workspace=services.workspace), True
        actor = who(message)
        if intent is Intent.acknowledge:
            moved = incident_store.transition(conn, incident["id"], from_=ACK_FROM, to="ACKNOWLEDGED", actor=actor)
            if moved is None:
                return notice("Already acknowledged", f"{label} is {incident['state']}.", style="muted"), False
            _audit(conn, services, actor, "incident.acknowledged", incident["id"], moved["transition_id"])
            return notice(f"Acknowledged by {message.user.name or actor}", label, style="success"), True
        if intent is Intent.resolve:
            moved = incident_store.transition(conn, incident["id"], from_=RESOLVE_FROM, to="RESOLVED", actor=actor,
                                              note=reason or None)
            if moved is None:
                return notice("Not resolved", f"{label} is {incident['state']}.", style="muted"), False
            _audit(conn, services, actor, "incident.resolved", incident["id"], moved["transition_id"],
                   reason=reason)
            _post_postmortem(conn, services, message, moved, root_cause=reason or None, resolved_by=actor)
            resolved.append(incident["id"])
            return notice(f"Resolved by {message.user.name or actor}",
                          f"{label}. A postmortem draft is in the incident thread.", style="success"), True
        if intent is Intent.escalate:
            text = f"escalated: {reason}" if reason else "escalated"
            entry = incident_store.note(conn, incident["id"], actor=actor, note=text)
            _audit(conn, services, actor, "incident.escalated", incident["id"], entry, reason=reason)
            return notice(f"Escalated by {message.user.name or actor}",
                          f"{label} needs more hands{': ' + reason if reason else ''}. "
                          "No paging target is configured, so nobody was paged automatically.",
                          style="warning"), True
    raise ValueError(f"not a lifecycle intent: {intent}")


def status_card(conn, incident: dict, *, workspace: str = "default") -> Card:
    """The `/warroom status` summary: every line cites its chat message or audit entry."""
    return summaries.status_card(summaries.gather(conn, incident, workspace=workspace),
                                 now=datetime.now(timezone.utc))


def _post_postmortem(conn, services: Services, message: ChatMessage, incident: dict, *, root_cause: str | None,
                     resolved_by: str) -> None:
    """Draft the postmortem in the resolve's transaction (stored and queued with it, or not at all) and post it
    in the incident's thread: under the alert message when the bot knows it, else where resolve was typed."""
    facts = summaries.gather(conn, incident, workspace=services.workspace)
    card = json.loads(summaries.postmortem_card(facts, root_cause=root_cause, resolved_by=resolved_by)
                      .model_dump_json())
    incident_store.save_postmortem(conn, incident_id=incident["id"], author=resolved_by, root_cause=root_cause,
                                   card=card, workspace=services.workspace)
    thread_key = incident["thread"] if incident["thread"] and (
        outbox.find_message(conn, incident["thread"], message.platform)
        or outbox.is_pending(conn, incident["thread"], platform=message.platform)) else None
    outbox.enqueue(conn, platform=message.platform, channel=incident["channel"] or message.channel, op="post",
                   thread_key=thread_key, thread_id=None if thread_key else message.thread, card=card)


def _audit(conn, services: Services, actor: str, action: str, incident_id: int, transition_id: int,
           **detail) -> None:
    """The audit entry of a timeline entry, linked to it so summaries cite the exact audit id."""
    audit_id = audit.append(conn, actor=actor, action=action, subject=f"incident:{incident_id}", detail=detail,
                            workspace=services.workspace)
    incident_store.link_audit(conn, transition_id, audit_id)
