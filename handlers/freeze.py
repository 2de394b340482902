"""`/warroom freeze [service] [why]` and `/warroom unfreeze [service]`: the emergency stop. A freeze refuses
every state-changing approval in its scope and keeps already-queued state changes from starting; read-only
steps still run, because looking is what people need most while things are frozen."""
from __future__ import annotations

from engine import approvals
from engine.cards import Card, notice
from engine.models import ChatMessage
from handlers.services import Services
from storage import audit
from storage import freezes as freeze_store

COMMANDS = ("freeze", "unfreeze")


def is_freeze_command(text: str) -> bool:
    return bool(text.split()) and text.split()[0].lower() in COMMANDS


def handle_freeze(services: Services, message: ChatMessage, text: str) -> tuple[Card, bool]:
    """Returns the card to answer with and whether everyone should see it."""
    command, _, rest = text.strip().partition(" ")
    service, reason = _scope(services, rest.strip())
    who = message.user.email or message.user.id
    scope = service or "all services"
    with services.pool.connection() as conn, conn.transaction():
        if command.lower() == "freeze":
            row = freeze_store.freeze(conn, service=service, reason=reason, frozen_by=who, workspace=services.workspace)
            if row is None:
                return notice("Already frozen", f"State changes for {scope} are already frozen.", style="muted"), False
            audit.append(conn, actor=who, action="policy.freeze", subject=f"service:{service or '*'}",
                         detail={"reason": reason, "channel": message.channel}, workspace=services.workspace)
            why = f": {reason}" if reason else ""
            return notice("State changes frozen",
                          f"{who} froze state changes for {scope}{why}. Nothing that changes state will be approved "
                          "or started until `/warroom unfreeze"
                          f"{' ' + service if service else ''}`; read-only steps still run.", style="warning"), True
        if not approvals.may_lift_freeze(message.user, services.config.policy, service):
            audit.append(conn, actor=who, action="policy.unfreeze_refused", subject=f"service:{service or '*'}",
                         detail={"reason": "not an approver"}, workspace=services.workspace)
            return notice("Still frozen", f"{message.user.name or message.user.id} is not an approver, and only an "
                                          "approver may lift a freeze.", style="warning"), False
        lifted = freeze_store.lift(conn, service=service, lifted_by=who, workspace=services.workspace)
        if not lifted:
            return notice("Not frozen", f"There is no active freeze for {scope}.", style="muted"), False
        audit.append(conn, actor=who, action="policy.unfreeze", subject=f"service:{service or '*'}",
                     detail={"lifted": [r["service"] or "*" for r in lifted]}, workspace=services.workspace)
        names = ", ".join(r["service"] or "all services" for r in lifted)
        return notice("Freeze lifted", f"{who} lifted the freeze on {names}; approved state changes may run again.",
                      style="success"), True


def _scope(services: Services, rest: str) -> tuple[str | None, str]:
    """`payments-api disk is filling` -> ("payments-api", "disk is filling"); `all …` or no known service
    first -> every service."""
    first, _, remainder = rest.partition(" ")
    if first.lower() in ("all", "*", "everything"):
        return None, remainder.strip()
    if first and first in services.known_services():
        return first, remainder.strip()
    return None, rest
