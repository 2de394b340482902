"""The incident lifecycle from chat: status, ack, resolve, escalate, and the control words investigating,
mitigated, inconclusive, learned. DETECTED -> ACKNOWLEDGED -> INVESTIGATING -> MITIGATED -> RESOLVED -> LEARNED
(engine.lifecycle says which moves are allowed and words each refusal); every move says who and when, in the
timeline and the audit log. Incidents are opened from critical alerts (handlers.alert); warroom moves them on by
itself too (engine.incident_hooks)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from engine import incident_hooks, lifecycle, summaries
from engine.cards import Card, LearnBlock, notice
from engine.models import ChatMessage, Intent
from engine.precedents import load_incident_document
from handlers.conversation import index_ended
from handlers.services import Services
from storage import audit, outbox
from storage import incidents as incident_store
from storage import memory as memory_store

log = logging.getLogger(__name__)

# Moves that are not intents of their own (the intent list is fixed): handlers.command routes these words
# before classification, like freeze. `ack` and `resolve` stay intents (`/warroom ack`, "we're on it").
COMMANDS = {"investigating": lifecycle.INVESTIGATING, "mitigated": lifecycle.MITIGATED,
            "inconclusive": lifecycle.INCONCLUSIVE, "learned": lifecycle.LEARNED}
INTENT_MOVES = {Intent.acknowledge: lifecycle.ACKNOWLEDGED, Intent.resolve: lifecycle.RESOLVED}
DONE = {lifecycle.ACKNOWLEDGED: "Acknowledged", lifecycle.RESOLVED: "Resolved",
        lifecycle.INVESTIGATING: "Investigating", lifecycle.MITIGATED: "Mitigated",
        lifecycle.INCONCLUSIVE: "Marked inconclusive", lifecycle.LEARNED: "Marked learned"}
REINDEX = (lifecycle.RESOLVED, lifecycle.LEARNED)  # states whose incident is (re)indexed as a precedent


def who(message: ChatMessage) -> str:
    return message.user.email or message.user.id


def is_lifecycle_command(text: str) -> bool:
    return bool(text.split()) and text.split()[0].lower() in COMMANDS


def handle_lifecycle_command(services: Services, message: ChatMessage, text: str, *,
                             thread_key: str | None) -> tuple[Card, bool]:
    """`investigating|mitigated|inconclusive|learned [note]`; returns (card, public) like handle_lifecycle."""
    command, _, note = text.strip().partition(" ")
    return _with_indexing(services, lambda done: _move(services, message, COMMANDS[command.lower()],
                                                       thread_key=thread_key, note=note.strip(), done=done))


def handle_lifecycle(services: Services, message: ChatMessage, intent: Intent, *, thread_key: str | None,
                     reason: str = "") -> tuple[Card, bool]:
    """Apply a lifecycle command; returns (card, public): errors go only to the person who asked.
    A resolved (or learned) incident is indexed as a precedent once the transition is committed."""
    if intent in INTENT_MOVES:
        return _with_indexing(services, lambda done: _move(services, message, INTENT_MOVES[intent],
                                                           thread_key=thread_key, note=reason, done=done))
    with services.pool.connection() as conn, conn.transaction():
        incident = incident_store.find_open(conn, channel=message.channel, thread=thread_key,
                                            workspace=services.workspace)
        if intent is Intent.incident_status and incident is None and thread_key:
            # In its own thread a closed incident still has a status (and a timeline) worth showing.
            incident = incident_store.in_thread(conn, channel=message.channel, thread=thread_key,
                                                workspace=services.workspace, states=lifecycle.CLOSED)
        if incident is None:
            return _nothing_open(), False
        if intent is Intent.incident_status:
            return status_card(conn, incident, workspace=services.workspace), True
        if intent is Intent.escalate:
            return _escalate(conn, services, message, incident, reason), True
    raise ValueError(f"not a lifecycle intent: {intent}")


def _with_indexing(services: Services, move) -> tuple[Card, bool]:
    done: list[int] = []
    card, public = move(done)
    for incident_id in done:
        try:
            index_incident(services, incident_id)
        except Exception:  # the incident moved either way; indexing is retried on the next resolve/learn
            log.exception("indexing incident %s as a precedent failed", incident_id)
    return card, public


def index_incident(services: Services, incident_id: int) -> None:
    """Make a resolved incident findable as knowledge (source `incident:<id>`), replacing an older version."""
    from engine.knowledge import store_parsed  # keeps the chat path free of ingest imports until needed

    doc = load_incident_document(services.pool, incident_id)
    if doc is not None:
        store_parsed(services.pool, services.embedder, doc, workspace=services.workspace)
    _end_conversation(services, incident_id)


def _end_conversation(services: Services, incident_id: int) -> None:
    """The incident's thread is a conversation that has ended: summarised and indexed as a precedent too."""
    with services.pool.connection() as conn, conn.transaction():
        incident = conn.execute("SELECT channel, thread, state FROM incidents WHERE id = %s", (incident_id,)).fetchone()
        if not incident or not incident["channel"] or not incident["thread"]:
            return
        posted = conn.execute("SELECT platform FROM chat_messages WHERE channel = %s AND (key = %s OR message_id = %s)"
                              " LIMIT 1", (incident["channel"], incident["thread"], incident["thread"])).fetchone()
        if posted is None:
            return
        key = memory_store.conversation_key(conn, platform=posted["platform"], channel=incident["channel"],
                                            thread=incident["thread"])
        memory_store.end(conn, platform=posted["platform"], channel=incident["channel"], thread_key=key,
                         why=f"incident #{incident_id} {incident['state'].lower()}", workspace=services.workspace)
    index_ended(services)


def _find(conn, services: Services, message: ChatMessage, thread_key: str | None, to: str) -> dict | None:
    """The incident a move is about: this thread's open one, else the channel's latest open one, else a closed
    one in this very thread (`learned`: the latest resolved one first). Never an older open incident just
    because it could make the move: a second `ack` must say "already acknowledged", not acknowledge another."""
    sources = lifecycle.sources(to)
    # `learned` moves a closed incident: look among those first, so an unrelated open one does not shadow it.
    order = (sources, lifecycle.OPEN) if all(s in lifecycle.CLOSED for s in sources) else (lifecycle.OPEN,)
    for states in order:
        found = incident_store.find_open(conn, channel=message.channel, thread=thread_key,
                                         workspace=services.workspace, states=states)
        if found is not None:
            return found
    if thread_key:
        return incident_store.in_thread(conn, channel=message.channel, thread=thread_key,
                                        workspace=services.workspace, states=lifecycle.CLOSED)
    return None


def _move(services: Services, message: ChatMessage, to: str, *, thread_key: str | None, note: str,
          done: list[int]) -> tuple[Card, bool]:
    actor = who(message)
    with services.pool.connection() as conn, conn.transaction():
        incident = _find(conn, services, message, thread_key, to)
        if incident is None:
            return _nothing_open(), False
        refused = lifecycle.refusal(incident["id"], incident["state"], to)
        moved = None if refused else incident_store.advance(
            conn, incident["id"], from_=lifecycle.sources(to), to=to, actor=actor, note=note or None,
            workspace=services.workspace, **({"reason": note} if to == lifecycle.RESOLVED else {}))
        if moved is None:  # refused, or someone else moved it between our read and our update
            current = incident_store.get(conn, incident["id"])["state"]
            why = refused or lifecycle.refusal(incident["id"], current, to) or f"incident #{incident['id']} moved"
            title = f"Already {to.lower()}" if current == to else f"Not {DONE[to].lower()}"
            return notice(title, f"{why[0].upper()}{why[1:]}. ({incident['title']})", style="muted"), False
        label = f"incident #{incident['id']} ({incident['title']})"
        body = label + (f": {note}" if note else "")
        if to == lifecycle.RESOLVED:
            _post_postmortem(conn, services, message, moved, root_cause=note or None, resolved_by=actor)
            body = f"{label}. A postmortem draft is in the incident thread."
        if to in REINDEX:
            done.append(incident["id"])
        return notice(f"{DONE[to]} by {message.user.name or actor}", body,
                      style="muted" if to == lifecycle.INCONCLUSIVE else "success"), True


def _escalate(conn, services: Services, message: ChatMessage, incident: dict, reason: str) -> Card:
    actor = who(message)
    label = f"incident #{incident['id']} ({incident['title']})"
    text = f"escalated: {reason}" if reason else "escalated"
    entry = incident_store.note(conn, incident["id"], actor=actor, note=text)
    _audit(conn, services, actor, "incident.escalated", incident["id"], entry, reason=reason)
    return notice(f"Escalated by {message.user.name or actor}",
                  f"{label} needs more hands{': ' + reason if reason else ''}. "
                  "No paging target is configured, so nobody was paged automatically.", style="warning")


def _nothing_open() -> Card:
    return notice("No open incident here",
                  "There is no open incident in this channel. Incidents open from critical alerts; "
                  "use `/warroom diagnose <symptom>` to investigate without one.", style="muted")


def diagnosed(services: Services, message: ChatMessage, thread_key: str | None) -> None:
    """A diagnosis asked in an incident's thread moves it to INVESTIGATING (engine.incident_hooks)."""
    if thread_key:
        with services.pool.connection() as conn, conn.transaction():
            incident_hooks.diagnosed(conn, channel=message.channel, thread_key=thread_key, asked_by=who(message),
                                     workspace=services.workspace)


def status_card(conn, incident: dict, *, workspace: str = "default") -> Card:
    """The `/warroom status` summary: every line cites its chat message or audit entry."""
    return summaries.status_card(summaries.gather(conn, incident, workspace=workspace),
                                 now=datetime.now(timezone.utc))


def _post_postmortem(conn, services: Services, message: ChatMessage, incident: dict, *, root_cause: str | None,
                     resolved_by: str) -> None:
    """Draft the postmortem in the resolve's transaction (stored and queued with it, or not at all) and post it
    in the incident's thread: under the alert message when the bot knows it, else where resolve was typed."""
    facts = summaries.gather(conn, incident, workspace=services.workspace)
    postmortem = summaries.postmortem_card(facts, root_cause=root_cause, resolved_by=resolved_by)
    # The resolve card offers to turn what worked into a runbook (handlers.learn).
    postmortem = postmortem.model_copy(update={"blocks": [*postmortem.blocks, LearnBlock(
        incident_id=incident["id"], actions=["draft"])]})
    card = json.loads(postmortem.model_dump_json())
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
