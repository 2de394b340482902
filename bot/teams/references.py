"""Conversation references: what the bot must know (service URL, tenant, its own id, the kind of
conversation) to speak first in a Teams conversation. Teams gives them only in activities it sends, so every
inbound activity refreshes its conversation's reference; they are kept in Redis, shared by every replica and
kept across restarts, so alerts can be posted proactively to `teams.alert_conversation`."""
from __future__ import annotations

import json
import logging

from botbuilder.core import TurnContext
from botbuilder.schema import Activity, ConversationReference

log = logging.getLogger(__name__)

KEY = "warroom:teams:ref:"


def base_conversation(conversation_id: str) -> str:
    """A channel thread is `19:…@thread.tacv2;messageid=…`; the channel itself is the part before `;`."""
    return conversation_id.split(";", 1)[0]


def thread_of(conversation_id: str) -> str | None:
    """The root message id of a channel thread, from `…;messageid=<id>`."""
    for part in conversation_id.split(";")[1:]:
        if part.startswith("messageid="):
            return part.removeprefix("messageid=") or None
    return None


class References:
    def __init__(self, redis=None) -> None:
        self.redis = redis
        self._local: dict[str, dict] = {}

    def remember(self, activity: Activity) -> None:
        """Store the reference of the conversation (not the thread) an activity came from."""
        if activity.conversation is None or not activity.service_url:
            return
        reference = TurnContext.get_conversation_reference(activity)
        data = reference.serialize()
        channel = base_conversation(activity.conversation.id)
        data["conversation"]["id"] = channel
        data.pop("activityId", None)
        data.pop("user", None)  # whoever spoke last; proactive messages are from the bot to the conversation
        if self._local.get(channel) == data:
            return
        self._local[channel] = data
        if self.redis is not None:
            try:
                self.redis.set(KEY + channel, json.dumps(data))
            except Exception as exc:  # the in-process copy still serves this replica
                log.warning("could not store the Teams conversation reference for %s: %s", channel, exc)

    def get(self, channel: str) -> ConversationReference | None:
        data = self._local.get(channel)
        if data is None and self.redis is not None:
            raw = self.redis.get(KEY + channel)
            if raw:
                data = self._local[channel] = json.loads(raw)
        return ConversationReference().deserialize(data) if data else None
