"""👍 / 👎 on a hypothesis: stored, and weighed by the human-validation factor next time."""
from __future__ import annotations

from engine.models import Actor
from handlers.services import Services
from storage import audit


def record_feedback(services: Services, *, actor: Actor, title: str, service: str | None, helpful: bool) -> str:
    """Store one vote; returns what to tell the voter."""
    title = title.strip()[:300]
    if not title:
        return "That hypothesis has no title; nothing was recorded."
    who = actor.email or actor.id
    with services.pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO hypothesis_feedback (workspace, title, service, helpful, actor) "
                     "VALUES (%s, %s, %s, %s, %s)", (services.workspace, title, service, helpful, who))
        audit.append(conn, actor=who, action="hypothesis.feedback", subject=f"hypothesis:{title}",
                     detail={"service": service, "helpful": helpful, "platform": actor.platform},
                     workspace=services.workspace)
    verdict = "helpful" if helpful else "wrong"
    return f"Thanks: recorded “{title}” as {verdict}. It will weigh on how this cause is ranked next time."
