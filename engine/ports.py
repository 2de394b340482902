"""The one side-effect protocol chat adapters implement. Platform ids stay opaque strings."""
from __future__ import annotations

from typing import Protocol

from engine.cards import Card
from engine.models import Frozen


class PostedMessage(Frozen):
    message_id: str
    thread_id: str | None = None


class RateLimited(Exception):
    """The platform asked us to slow down; retry this message after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class PermanentFailure(Exception):
    """The platform refused the message for good (channel gone, bad request): park it, do not retry."""


class ChatPort(Protocol):
    async def post(self, channel: str, card: Card, *, thread_id: str | None = None) -> PostedMessage: ...

    async def update(self, channel: str, message_id: str, card: Card) -> None: ...
