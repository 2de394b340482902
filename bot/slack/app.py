"""The Slack adapter on slack-bolt's AsyncApp: slash commands, button clicks, mentions and alert messages
in, engine events out. It only translates: every decision is made by a handler, every reply goes through
the outbox. Each listener acks first (Slack wants an answer within 3 s) and works after the ack."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.chat_work import first_time, run_handler
from bot.settings import Settings
from bot.slack.blocks import ALERT_ACTION, APPROVE, FEEDBACK_DOWN, FEEDBACK_UP, LEARN, REJECT
from bot.slack.integrations import parse_integration_message
from bot.slack.port import permalink
from engine.cards import notice
from engine.models import Actor, ChatMessage, StepDecision
from handlers.alert import receive_from_chat
from handlers.approval import click
from handlers.command import handle_message, reply
from handlers.feedback import record_feedback
from handlers.noise import alert_action
from handlers.learn import Where, click_and_reply
from handlers.services import Services

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENT_TTL_S = 3600      # Slack retries an event for up to about an hour
CLICK_TTL_S = 30        # a double click arrives within seconds
EMAIL_TTL_S = 600
THREAD_CONTEXT_LIMIT = 20
_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")
_STEP_ACTION = re.compile(rf"^({APPROVE}|{REJECT})_\d+(_retry)?$")
_FEEDBACK_ACTION = re.compile(rf"^({FEEDBACK_UP}|{FEEDBACK_DOWN})_\d+$")
_ALERT_ACTION = re.compile(rf"^{ALERT_ACTION}_(noise|silence|investigate)$")
_LEARN_ACTION = re.compile(rf"^{LEARN}_(draft|approve|edit|reject)_\d+$")


def slack_client(settings: Settings) -> AsyncWebClient:
    """Every Web API client honours SLACK_API_URL (Slack-compatible endpoints, test stand-ins)."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(token=token, base_url=base_url)


class SlackAdapter:
    def __init__(self, services: Services, settings: Settings, *, redis, wake_annotator: Callable[[], None],
                 client: AsyncWebClient | None = None, dedup: Callable[[str, bool], None] | None = None,
                 wake_outbox: Callable[[], None] = lambda: None) -> None:
        self.services = services
        self.wake_outbox = wake_outbox  # a handler queued its answer: send it now, not at the next poll
        self._slots = asyncio.Semaphore(settings.handler_concurrency)
        self.dedup = dedup  # counts retries and double clicks recognised (bot.metrics.Metrics.dedup)
        self.settings = settings
        self.redis = redis
        self.wake_annotator = wake_annotator
        self.client = client or slack_client(settings)
        self.socket_mode = settings.slack_app_token is not None
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self.app = AsyncApp(client=self.client, signing_secret=secret,
                            # Socket Mode connections are authenticated by the app token instead.
                            request_verification_enabled=not self.socket_mode,
                            process_before_response=False)
        self._emails: dict[str, tuple[str | None, float]] = {}
        self._identity: tuple[str | None, str | None] = (None, None)
        self._workspace_url: str | None = None   # from auth.test, for permalinks of other integrations' alerts
        self._register()

    # --- transport -------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /slack/events: events, slash commands and interactivity on one URL."""
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def start_socket_mode(self):
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(self.app, self.settings.slack_app_token.get_secret_value(),
                                         web_client=self.client)
        await handler.connect_async()
        log.info("Slack connected over Socket Mode")
        return handler

    # --- listeners ---------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        app.middleware(self._drop_retried_events)
        app.command(re.compile(r"^/"))(self._on_command)
        app.action(_STEP_ACTION)(self._on_step_click)
        app.action(_FEEDBACK_ACTION)(self._on_feedback)
        app.action(_ALERT_ACTION)(self._on_alert_action)
        app.action(_LEARN_ACTION)(self._on_learn_click)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.error(self._on_error)

    async def _drop_retried_events(self, body: dict, next: Callable, logger) -> BoltResponse | None:
        """Slack re-sends an event it thinks we missed (X-Slack-Retry-Num); each event id is handled once."""
        event_id = body.get("event_id") if isinstance(body, dict) else None
        if event_id and not await self._first_time(f"warroom:slack:event:{event_id}", EVENT_TTL_S):
            return BoltResponse(status=200, body="")
        return await next()

    async def _on_command(self, ack, command: dict) -> None:
        await ack()
        message = ChatMessage(platform=PLATFORM, channel=command["channel_id"], text=command.get("text") or "",
                              user=Actor(id=command["user_id"], platform=PLATFORM, name=command.get("user_name")),
                              thread=command.get("thread_ts"))  # Slack sends none today; honour it if it comes
        await self._work(handle_message, message, on_error=message)

    async def _on_step_click(self, ack, body: dict, action: dict) -> None:
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        if not await self._first_time(f"warroom:slack:click:{action['action_id']}:{message_ts}:{user}", CLICK_TTL_S):
            return  # a double click: the first one is being handled
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        thread_ts = (body.get("message") or {}).get("thread_ts") or container.get("thread_ts")
        actor = Actor(id=user, platform=PLATFORM, name=body["user"].get("username") or body["user"].get("name"),
                      email=await self._email(user))
        try:
            step_id = int(action["value"])
        except (KeyError, ValueError):
            log.warning("ignoring a step button without a step id: %r", action.get("value"))
            return
        decision = StepDecision(step_id=step_id, approve=action["action_id"].startswith(APPROVE), actor=actor,
                                channel=channel, message_id=message_ts)
        await self._work(click, decision, platform=PLATFORM, channel=channel, thread_id=thread_ts,
                         on_error=ChatMessage(platform=PLATFORM, channel=channel, text="", user=actor,
                                              thread=thread_ts))

    async def _on_feedback(self, ack, body: dict, action: dict) -> None:
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        if not await self._first_time(
                f"warroom:slack:click:{action['action_id']}:{container.get('message_ts')}:{user}", CLICK_TTL_S):
            return
        try:
            value = json.loads(action.get("value") or "{}")
        except json.JSONDecodeError:
            value = {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        thread_ts = (body.get("message") or {}).get("thread_ts")
        actor = Actor(id=user, platform=PLATFORM, name=body["user"].get("username"), email=await self._email(user))
        asker = ChatMessage(platform=PLATFORM, channel=channel, text="", user=actor, thread=thread_ts)

        def vote(services: Services) -> None:
            text = record_feedback(services, actor=actor, title=str(value.get("title") or ""),
                                   service=value.get("service"), helpful=action["action_id"].startswith(FEEDBACK_UP),
                                   channel=channel, message_id=container.get("message_ts"), thread_id=thread_ts)
            reply(services, asker, notice("Feedback recorded", text, style="success"), private=True)

        await self._work(vote, on_error=asker)

    async def _on_alert_action(self, ack, body: dict, action: dict) -> None:
        """Mark as noise / Silence / Investigate anyway, on an alert group's messages."""
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        if not await self._first_time(
                f"warroom:slack:click:{action['action_id']}:{container.get('message_ts')}:{user}", CLICK_TTL_S):
            return
        try:
            group_id = int(json.loads(action.get("value") or "{}")["group"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            log.warning("ignoring an alert button without a group: %r", action.get("value"))
            return
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        thread_ts = (body.get("message") or {}).get("thread_ts") or (body.get("message") or {}).get("ts")
        actor = Actor(id=user, platform=PLATFORM, name=body["user"].get("username"), email=await self._email(user))
        asker = ChatMessage(platform=PLATFORM, channel=channel, text="", user=actor, thread=thread_ts)
        verb = _ALERT_ACTION.match(action["action_id"]).group(1)

        def act(services: Services) -> None:
            text = alert_action(services, action=verb, group_id=group_id, actor=actor)
            reply(services, asker, notice("Alert", text), private=True)

        await self._work(act, on_error=asker)

    async def _on_learn_click(self, ack, body: dict, action: dict) -> None:
        """Draft runbook (resolve card), Approve / Edit / Reject (draft card): handlers.learn decides."""
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        if not await self._first_time(f"warroom:slack:click:{action['action_id']}:{message_ts}:{user}", CLICK_TTL_S):
            return
        try:
            value = json.loads(action.get("value") or "{}")
            incident_id = int(value["incident_id"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            log.warning("ignoring a learn button without an incident id: %r", action.get("value"))
            return
        draft_id = value.get("draft_id")
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
        thread_ts = (body.get("message") or {}).get("thread_ts") or container.get("thread_ts") or message_ts
        actor = Actor(id=user, platform=PLATFORM, name=body["user"].get("username") or body["user"].get("name"),
                      email=await self._email(user))
        verb = _LEARN_ACTION.match(action["action_id"]).group(1)
        await self._work(click_and_reply, actor, action=verb, incident_id=incident_id,
                         draft_id=int(draft_id) if draft_id is not None else None,
                         where=Where(platform=PLATFORM, channel=channel, thread_id=thread_ts),
                         on_error=ChatMessage(platform=PLATFORM, channel=channel, text="", user=actor,
                                              thread=thread_ts))

    async def _on_mention(self, event: dict) -> None:
        """`@warroom ...` anywhere: answer in the thread, with the thread so far as context."""
        if self._is_ours(event):
            return
        channel, thread_ts = event["channel"], event.get("thread_ts")
        context = await self._thread_texts(channel, thread_ts, exclude=event.get("ts")) if thread_ts else []
        message = ChatMessage(platform=PLATFORM, channel=channel, text=_MENTION.sub("", event.get("text") or ""),
                              user=Actor(id=event.get("user") or "unknown", platform=PLATFORM),
                              thread=thread_ts or event.get("ts"), message_id=event.get("ts"),
                              thread_context=context)
        await self._work(handle_message, message, on_error=message)

    async def _on_message(self, event: dict) -> None:
        """Alert messages other integrations post in the alert channel are annotated in their thread."""
        if self._is_ours(event) or event.get("channel") != self.services.config.slack.alert_channel:
            return
        if event.get("subtype") not in (None, "bot_message") or not (event.get("bot_id") or event.get("subtype")):
            return  # people talk to the bot by mentioning it; edits and deletions are not new alerts
        if event.get("thread_ts") and event.get("thread_ts") != event.get("ts"):
            return  # a reply inside a thread is a conversation, not a new alert
        alerts = parse_integration_message(event)
        if not alerts:
            return
        url = self._workspace_url
        link = permalink(url, event["channel"], event["ts"]) if url else None
        ids = await asyncio.to_thread(receive_from_chat, self.services, alerts, platform=PLATFORM,
                                      channel=event["channel"], message_id=event["ts"], permalink=link)
        if ids:
            self.wake_annotator()
            await self._react(event["channel"], event["ts"], "eyes")

    async def _on_error(self, error: Exception, body: dict) -> None:
        log.error("Slack request failed: %s", error, exc_info=error)

    # --- helpers -------------------------------------------------------------------------------------

    def _is_ours(self, event: dict) -> bool:
        """Bolt drops our own events already; this is the belt to its braces (and covers Socket Mode)."""
        bot_id, bot_user = self._identity
        return bool((bot_id and event.get("bot_id") == bot_id) or (bot_user and event.get("user") == bot_user))

    async def remember_identity(self) -> None:
        """Learn our own bot identity at start-up, so the bot never answers itself."""
        try:
            me = await self.client.auth_test()
            self._identity = (me.get("bot_id"), me.get("user_id"))
            self._workspace_url = me.get("url")   # to link integration messages the way the port links ours
        except Exception as exc:
            log.warning("Slack auth.test failed (%s); relying on bolt's own self-event filter", exc)

    async def _work(self, func: Callable[..., Any], *args, on_error: ChatMessage | None = None, **kwargs) -> None:
        await run_handler(self.services, "Slack", func, *args, on_error=on_error, slots=self._slots, **kwargs)
        self.wake_outbox()

    async def _first_time(self, key: str, ttl: int) -> bool:
        return await first_time(self.redis, key, ttl, record=self.dedup)

    async def _email(self, user_id: str) -> str | None:
        """A user's email (users:read.email), so approvers may be listed by email; cached for 10 minutes."""
        cached = self._emails.get(user_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        try:
            info = await self.client.users_info(user=user_id)
            email = ((info.get("user") or {}).get("profile") or {}).get("email")
        except SlackApiError as exc:
            log.info("users.info %s failed: %s", user_id, exc.response.get("error"))
            email = None
        self._emails[user_id] = (email, time.monotonic() + EMAIL_TTL_S)
        return email

    async def _thread_texts(self, channel: str, thread_ts: str, *, exclude: str | None) -> list[str]:
        try:
            result = await self.client.conversations_replies(channel=channel, ts=thread_ts, limit=THREAD_CONTEXT_LIMIT)
        except SlackApiError as exc:
            log.info("conversations.replies failed: %s", exc.response.get("error"))
            return []
        texts = []
        for msg in result.get("messages") or []:
            if msg.get("ts") == exclude:
                continue
            text = _message_text(msg)
            if text:
                texts.append(_MENTION.sub("", text).strip())
        return texts

    async def _react(self, channel: str, ts: str, name: str) -> None:
        try:
            await self.client.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            log.info("could not add :%s: (%s)", name, exc.response.get("error"))


def _message_text(msg: dict) -> str:
    """What a message says, including what integrations put in attachments."""
    parts = [msg.get("text") or ""]
    for attachment in msg.get("attachments") or []:
        if isinstance(attachment, dict):
            parts.extend(str(attachment.get(k) or "") for k in ("title", "text", "fallback"))
    return " ".join(p for p in parts if p).strip()[:2000]
