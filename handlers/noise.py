"""The buttons about an alert group itself: "Mark as noise" on its parent, and on a noise note "Silence" and
"Investigate anyway". Each returns what to tell the person who clicked."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from engine.approvals import identity, is_approver
from engine.cards import notice
from engine.models import Actor
from handlers.alert import destinations, group_thread_key, investigate_anyway
from handlers.services import Services
from storage import alerts as alert_store
from storage import audit
from storage import noise as noise_store
from storage import outbox

ACTIONS = ("noise", "silence", "investigate")


def alert_action(services: Services, *, action: str, group_id: int, actor: Actor) -> str:
    if action not in ACTIONS:
        return f"Unknown alert action {action!r}."
    with services.pool.connection() as conn:
        group = conn.execute("SELECT * FROM alert_groups WHERE id = %s AND workspace = %s",
                             (group_id, services.workspace)).fetchone()
        lead = alert_store.first_firing(conn, group_id) if group else None
    if lead is None:
        return "That alert is no longer known here; nothing was changed."
    if action == "noise":
        return _mark(services, lead, actor, verdict="noise")
    if action == "silence":
        return _silence(services, group, lead, actor)
    _mark(services, lead, actor, verdict="signal")
    if not investigate_anyway(services, group_id):
        return f"{lead['name']} is already being investigated; the answer is in the thread."
    return f"Investigated {lead['name']}: the answer is in the thread. It will not be called noise again unless " \
           "someone marks it so."


def _mark(services: Services, lead: dict, actor: Actor, *, verdict: str) -> str:
    who = identity(actor)
    with services.pool.connection() as conn, conn.transaction():
        noise_store.add_verdict(conn, lead, verdict=verdict, actor=who, workspace=services.workspace)
        audit.append(conn, actor=who, action=f"alert.marked_{verdict}", subject=f"alert:{lead['id']}",
                     detail={"fingerprint": lead["fingerprint"], "name": lead["name"], "platform": actor.platform},
                     workspace=services.workspace)
    days = services.config.alerts.noise.mark_memory_days
    return (f"Recorded: {lead['name']} is noise. For the next {days:g} days its firings get a short note instead "
            "of an investigation, unless someone asks for one.") if verdict == "noise" else \
        f"Recorded: {lead['name']} is worth investigating."


def _silence(services: Services, group: dict, lead: dict, actor: Actor) -> str:
    """Only approvers may silence: a silence hides the next firings from the channel."""
    if not is_approver(actor, services.config.policy, lead["service"], lead["environment"]):
        return "Only approvers (policy.approvers) may silence an alert; nothing was changed."
    who = identity(actor)
    hours = services.config.alerts.noise.silence_hours
    until = datetime.now(timezone.utc) + timedelta(hours=hours)
    with services.pool.connection() as conn, conn.transaction():
        existing = noise_store.active_silence(conn, lead["fingerprint"], now=datetime.now(timezone.utc),
                                              workspace=services.workspace)
        if existing is not None:
            return f"{lead['name']} is already silenced until {existing['ends_at']:%Y-%m-%d %H:%M} UTC " \
                   f"(by {existing['actor']})."
        silence = noise_store.add_silence(conn, lead, actor=who, until=until, reason="noise",
                                          workspace=services.workspace)
        audit.append(conn, actor=who, action="alert.silence", subject=f"alert:{lead['id']}",
                     detail={"silence": silence["id"], "until": until, "fingerprint": lead["fingerprint"]},
                     workspace=services.workspace)
        said = notice(f"Silenced: {lead['name']}", f"{who} silenced it for {hours:g} h (until "
                      f"{until:%Y-%m-%d %H:%M} UTC). New firings are still recorded, but not posted.")
        for platform, channel in destinations(services):  # everyone in the thread should know, not just the clicker
            outbox.enqueue(conn, platform=platform, channel=channel, op="post", thread_key=group_thread_key(group),
                           card=json.loads(said.model_dump_json()))
    return f"Silenced {lead['name']} for {hours:g} h."
