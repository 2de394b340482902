"""👍 / 👎 on a hypothesis: stored, and weighed by the human-validation factor next time. A vote on a card in a
chat thread is also a turn of that thread's conversation: 👎 rules the cause out there, 👍 confirms it."""
from __future__ import annotations

from engine.models import Actor
from handlers.services import Services
from storage import audit
from storage import memory as memory_store


def record_feedback(services: Services, *, actor: Actor, title: str, service: str | None, helpful: bool,
                    channel: str | None = None, message_id: str | None = None,
                    thread_id: str | None = None) -> str:
    """Store one vote; returns what to tell the voter. `channel`, `message_id` (the card voted on) and
    `thread_id` (the thread it was posted in, if any) place the vote in its conversation."""
    title = title.strip()[:300]
    if not title:
        return "That hypothesis has no title; nothing was recorded."
    who = actor.email or actor.id
    with services.pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO hypothesis_feedback (workspace, title, service, helpful, actor) "
                     "VALUES (%s, %s, %s, %s, %s)", (services.workspace, title, service, helpful, who))
        audit_id = audit.append(conn, actor=who, action="hypothesis.feedback", subject=f"hypothesis:{title}",
                                detail={"service": service, "helpful": helpful, "platform": actor.platform},
                                workspace=services.workspace)
        key = memory_store.conversation_key(conn, platform=actor.platform, channel=channel,
                                            thread=thread_id or message_id) if channel else None
        if key is not None:
            memory_store.record(conn, platform=actor.platform, channel=channel, thread_key=key,
                                kind="confirmed" if helpful else "ruled_out",
                                text=f"{'👍' if helpful else '👎'} {title}", actor=actor.name or who,
                                refs={"hypothesis": title, "audit_id": audit_id, "message_id": message_id},
                                workspace=services.workspace)
    verdict = "helpful" if helpful else "wrong"
    return f"Thanks: recorded “{title}” as {verdict}. It will weigh on how this cause is ranked next time."
