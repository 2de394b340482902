"""`/warroom insights`: recurring incident clusters ranked by cost, with a runbook draft offered for the top
ones nothing covers yet; and the weekly digest serve posts (once per ISO week, whichever replica gets there).

`insights` posts the digest in the channel; `insights draft N` (or the card's "Draft runbook" button, which is
the postmortem card's learn button) drafts a runbook from resolved incident N through handlers.learn, so it
goes through the same review and never runs until approved."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

from engine import insights
from engine.cards import Card, notice
from engine.models import Actor
from handlers.learn import Refused, Where, draft_for
from handlers.services import Services
from storage import insights as insight_store
from storage import outbox
from storage import runbooks as runbook_store

log = logging.getLogger(__name__)

USAGE = "`insights` ranks recurring incidents; `insights draft N` drafts a runbook from resolved incident N"


def is_insights_command(text: str) -> bool:
    return bool(text.split()) and text.split()[0].lower() == "insights"


def handle_insights_command(services: Services, actor: Actor, text: str, where: Where) -> tuple[Card, bool]:
    """`insights` or `insights draft N`; returns (card, public): refusals go only to the asker."""
    words = text.split()[1:]
    if not words:
        return digest(services, datetime.now(timezone.utc)), True
    if len(words) == 2 and words[0].lower() == "draft" and words[1].lstrip("#").isdigit():
        try:
            return draft_for(services, actor, where, incident_id=int(words[1].lstrip("#"))), True
        except Refused as exc:
            return notice("Runbook draft", str(exc), style="warning"), False
    return notice("Insights", f"Not understood: {USAGE}.", style="warning"), False


def clusters(services: Services, now: datetime) -> list[insights.Cluster]:
    cfg = services.config.insights
    with services.pool.connection() as conn:
        rows = insight_store.incidents_since(conn, now - timedelta(days=cfg.window_days),
                                             workspace=services.workspace)
        vectors = insight_store.incident_vectors(conn, [r["id"] for r in rows], workspace=services.workspace)
        runbooks = runbook_store.active_runbooks(conn, workspace=services.workspace)
    records = [insights.IncidentRecord(
        id=r["id"], title=r["title"], service=r["service"], state=r["state"], detected_at=r["detected_at"],
        resolved_at=r["resolved_at"], acked_at=r["acked_at"], alerts=tuple(r["alerts"]),
        manual_steps=tuple(r["manual_steps"]), link=r["link"], succeeded_steps=r["succeeded_steps"]) for r in rows]
    return insights.rank(records, vectors, runbooks=runbooks, similarity=cfg.similarity,
                         min_incidents=cfg.min_incidents, now=now)


def digest(services: Services, now: datetime, *, weekly: bool = False) -> Card:
    cfg = services.config.insights
    return insights.digest_card(clusters(services, now), window_days=cfg.window_days, top=cfg.top, weekly=weekly)


def post_digest_if_due(services: Services, now: datetime) -> bool:
    """Post this week's digest to the configured channel/conversation if it is due and no replica posted it
    yet; True when this call posted it. The week's row and the outbox rows commit together."""
    cfg = services.config.insights.digest
    destinations = [(p, c) for p, c in (("slack", cfg and cfg.channel), ("teams", cfg and cfg.conversation)) if c]
    if cfg is None or not destinations:
        return False
    with services.pool.connection() as conn:
        last = insight_store.last_digest_week(conn, workspace=services.workspace)
    if not insights.digest_due(now, cfg, last):
        return False
    found = clusters(services, now)
    card = insights.digest_card(found, window_days=services.config.insights.window_days,
                                top=services.config.insights.top, weekly=True)
    body = json.loads(card.model_dump_json())
    week = insights.iso_week(now)
    with services.pool.connection() as conn, conn.transaction():
        if not insight_store.claim_digest_week(conn, week, clusters=len(found), workspace=services.workspace):
            return False   # another replica posted this week's digest meanwhile
        for platform, channel in destinations:
            outbox.enqueue(conn, platform=platform, channel=channel, op="post", card=body)
    log.info("weekly insights digest %s posted (%d recurring clusters)", week, len(found))
    return True
