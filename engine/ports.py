"""The one side-effect protocol chat adapters implement. Platform ids stay opaque strings."""
from __future__ import annotations

from typing import Protocol

from engine.cards import Card
from engine.models import Frozen


class PostedMessage(Frozen):
    """`permalink`: a link anyone in the workspace can open to see the message, when the adapter can build one
    without another API call (summaries cite it); None where the platform has none (the shell, a DM)."""

    message_id: str
    thread_id: str | None = None
    permalink: str | None = None


class RateLimited(Exception):
    """The platform asked us to slow down; retry this message after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class PermanentFailure(Exception):
    """The platform refused the message for good (channel gone, bad request): park it, do not retry."""


class ChatPort(Protocol):
    """`ref` names the outbox row being sent, for adapters that link to the full card when they must cut
    it to fit. Adapters that can show a message to one person only also implement
    `ephemeral(channel, user, card, *, thread_id=None, ref=None)`; the others get those as posts."""

    async def post(self, channel: str, card: Card, *, thread_id: str | None = None,
                   ref: str | None = None) -> PostedMessage: ...

    async def update(self, channel: str, message_id: str, card: Card, *, ref: str | None = None) -> None: ...
