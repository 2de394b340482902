"""TeamsPort: the outbox's way into the Bot Framework connector, through botbuilder's CloudAdapter. It posts
and updates Adaptive Cards proactively (from stored conversation references) and maps the connector's
answers onto the dispatcher's outcomes: sent, retry later (429 with Retry-After; 412, 5xx and network errors
back off with jitter), or park for good (400/403/404)."""
from __future__ import annotations

import asyncio
import logging
import json
import random
from typing import Awaitable, Callable
from urllib.parse import quote, urlencode

from botbuilder.core import TurnContext
from botbuilder.integration.aiohttp import CloudAdapter
from botbuilder.schema import (Activity, ActivityTypes, Attachment, ConversationParameters, ConversationReference,
                               ResourceResponse)

from bot.teams import cards
from bot.teams.references import References, base_conversation
from engine.cards import Card
from engine.ports import PermanentFailure, PostedMessage, RateLimited

log = logging.getLogger(__name__)

# A reply in a channel thread is addressed (and updated) through `<channel>;messageid=<root>`, so its message id
# carries the root: "<root>|<activity id>". Top-level messages and chats keep the plain activity id.
THREAD_SEP = "|"
TRANSIENT = {412, 429, 500, 502, 503, 504}
PERMANENT = {400, 401, 403, 404, 405, 413}
MAX_TEXT = 20_000
DEEP_LINK = "https://teams.microsoft.com/l/message/"


def deep_link(conversation_id: str, message_id: str, *, conversation_type: str | None, tenant_id: str | None = None,
              parent_id: str | None = None) -> str | None:
    """The documented Teams deep link to a message (learn.microsoft.com, "Deep link to Teams chat"), or None:

    * channel: `…/l/message/<channel id>/<message id>?tenantId=…&parentMessageId=<thread root>` (the channel id
      without `;messageid=…`; a top-level message is its own root);
    * group chat: `…/l/message/<chat id>/<message id>?tenantId=…&context={"contextType":"chat"}`, for the
      `19:…` chat ids the format supports (a personal chat with a bot is `a:…`: no link).
    The documented `groupId`, `teamName` and `channelName` are not in a conversation reference; Teams opens the
    message without them."""
    if not conversation_id or not message_id:
        return None
    conversation = base_conversation(conversation_id)
    if not conversation.startswith("19:"):
        return None
    params: dict[str, str] = {}
    if tenant_id:
        params["tenantId"] = tenant_id
    if conversation_type == "channel":
        params["parentMessageId"] = parent_id or message_id
        if message_id.isdigit():
            params["createdTime"] = message_id   # Teams message ids are the post time in epoch ms
    else:
        params["context"] = json.dumps({"contextType": "chat"}, separators=(",", ":"))
    return f"{DEEP_LINK}{quote(conversation, safe=':@')}/{quote(message_id, safe='')}?{urlencode(params)}"


class NoReference(Exception):
    """The bot has not heard from this conversation yet (it learns the service URL when it is installed
    there or spoken to); retried with backoff, since installing the app fixes it."""


class TeamsPort:
    def __init__(self, adapter: CloudAdapter, references: References, *, app_id: str | None,
                 more_url: Callable[[str], str] | None = None,
                 text_renderer: Callable[[Card], str] | None = None) -> None:
        self.adapter = adapter
        self.references = references
        self.app_id = app_id or ""
        self.more_url = more_url
        self.text_renderer = text_renderer

    async def post(self, channel: str, card: Card, *, thread_id: str | None = None,
                   ref: str | None = None) -> PostedMessage:
        reference = await self._reference(channel)
        in_channel = reference.conversation.conversation_type == "channel"
        conversation = reference.conversation
        if in_channel and thread_id is None:
            message_id = await self._call(card, ref, lambda a: self._new_thread(reference, a))
            return PostedMessage(message_id=message_id,
                                 permalink=_link(channel, message_id, conversation.conversation_type,
                                                 conversation.tenant_id))
        if not in_channel:
            thread_id = None  # chats have no threads: the reply simply follows in the chat
        elif thread_id:
            thread_id = thread_id.split(THREAD_SEP, 1)[0]  # a thread's root is always a top-level message
            reference.conversation.id = f"{channel};messageid={thread_id}"

        async def send(context: TurnContext, activity: Activity) -> ResourceResponse:
            # With a root, TurnContext replies to it (POST …/activities/<root>); without, a plain send.
            context.activity.id = thread_id
            return await context.send_activity(activity)

        response = await self._call(card, ref, lambda a: self._continue(reference, send, a))
        message_id = response.id if response else ""
        return PostedMessage(message_id=f"{thread_id}{THREAD_SEP}{message_id}" if thread_id else message_id,
                             thread_id=thread_id,
                             permalink=_link(channel, message_id, conversation.conversation_type,
                                             conversation.tenant_id, parent_id=thread_id))

    async def update(self, channel: str, message_id: str, card: Card, *, ref: str | None = None) -> None:
        """Redraw a posted card in place (PUT …/activities/<id>): approvals, progress and results."""
        reference = await self._reference(channel)
        root, _, activity_id = message_id.rpartition(THREAD_SEP)
        if root:
            reference.conversation.id = f"{channel};messageid={root}"

        async def update(context: TurnContext, activity: Activity) -> None:
            context.activity.id = None
            activity.id = activity_id
            await context.update_activity(activity)

        await self._call(card, ref, lambda a: self._continue(reference, update, a))

    # --- helpers -------------------------------------------------------------------------------------

    async def _reference(self, channel: str) -> ConversationReference:
        reference = await asyncio.to_thread(self.references.get, channel)
        if reference is None:
            raise NoReference(f"teams: no conversation reference for {channel} yet; install the app there")
        return reference

    def _more(self, ref: str | None) -> str | None:
        return self.more_url(ref) if self.more_url and ref else None

    async def _continue(self, reference: ConversationReference,
                        logic: Callable[[TurnContext, Activity], Awaitable], activity: Activity):
        """Run `logic` in a proactive turn (continue_conversation): the connector client comes with it."""
        result: list = []
        failed: list[Exception] = []

        async def run(context: TurnContext) -> None:
            try:
                result.append(await logic(context, activity))
            except Exception as exc:  # noqa: BLE001 - the pipeline would hand it to on_turn_error and
                failed.append(exc)    # carry on; the outbox must see it to retry or park the message

        await self.adapter.continue_conversation(reference, run, self.app_id)
        if failed:
            raise failed[0]
        return result[0] if result else None

    async def _new_thread(self, reference: ConversationReference, activity: Activity) -> str:
        """A top-level post in a channel starts a new thread in it: POST /v3/conversations."""
        created: list[str] = []

        async def remember(context: TurnContext) -> None:
            created.append(context.activity.id)

        tenant = reference.conversation.tenant_id
        params = ConversationParameters(is_group=True, bot=reference.bot, activity=activity, tenant_id=tenant,
                                        channel_data={"channel": {"id": reference.conversation.id},
                                                      "tenant": {"id": tenant}})
        await self.adapter.create_conversation(self.app_id, remember, params, reference.channel_id,
                                               reference.service_url)
        return created[0]

    async def _call(self, card: Card, ref: str | None, send: Callable[[Activity], Awaitable]):
        try:
            return await send(_message(card, self._more(ref)))
        except Exception as exc:  # noqa: BLE001 - sorted into the dispatcher's outcomes below
            status = _status(exc)
            if status in (400, 413) and self.text_renderer is not None:
                # Teams refused the card: say the same thing as plain text rather than not at all.
                log.warning("Teams refused the card (HTTP %s); sending it as text", status)
                try:
                    return await send(_text_message(self.text_renderer(card)))
                except Exception as again:  # noqa: BLE001
                    exc, status = again, _status(again)
            _raise_for(exc, status)


def _link(channel: str, message_id: str | None, conversation_type: str | None, tenant_id: str | None, *,
          parent_id: str | None = None) -> str | None:
    """A deep link for a posted message; never fails a send (a link is a courtesy)."""
    try:
        return deep_link(channel, message_id or "", conversation_type=conversation_type, tenant_id=tenant_id,
                         parent_id=parent_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("no Teams deep link for %s/%s: %s", channel, message_id, exc)
        return None


def _message(card: Card, more_url: str | None) -> Activity:
    return Activity(type=ActivityTypes.message, summary=cards.summary(card), attachments=[
        Attachment(content_type=cards.CONTENT_TYPE, content=cards.render(card, more_url=more_url))])


def _text_message(text: str) -> Activity:
    return Activity(type=ActivityTypes.message, text=text[:MAX_TEXT], text_format="markdown")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return int(status) if isinstance(status, int) else None


def _raise_for(exc: Exception, status: int | None):
    if status == 429:
        raise RateLimited(_retry_after(exc)) from exc
    if status in PERMANENT:
        raise PermanentFailure(f"teams: HTTP {status} {exc}") from exc
    raise exc  # 412, 5xx, network, no reference yet: the dispatcher backs off with jitter and retries


def _retry_after(exc: Exception) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(1.0, float(value))
            except (TypeError, ValueError):
                break
    # No Retry-After: Teams asks for exponential backoff; jitter keeps replicas from retrying in step.
    return 1.0 + random.random() * 2
