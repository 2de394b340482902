"""The Microsoft Teams adapter on botbuilder's CloudAdapter: Bot Framework activities in, engine events out.
It only translates: every decision is made by a handler, every message goes out through the outbox (see
TeamsPort). Messages are answered at once and worked on afterwards; `adaptiveCard/action` invokes are
answered within Teams' deadline with what the clicker needs to know, and the card itself is updated in
place for everyone by the outbox."""
from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from aiohttp import web
from botbuilder.core import InvokeResponse, TurnContext, serializer_helper
from botbuilder.core.teams import TeamsInfo
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity, ActivityTypes

from bot.chat_work import first_time, run_handler
from bot.settings import Settings
from bot.teams.cards import ALERT_ACTION, APPROVE, FEEDBACK, LEARN, REJECT, RETRY, YAML_INPUT
from bot.teams.references import References, base_conversation, thread_of
from engine.cards import notice
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import Reply, decide
from handlers.command import handle_message, reply
from handlers.feedback import record_feedback
from handlers.noise import alert_action
from handlers.learn import Where, click_and_reply
from handlers.services import Services

log = logging.getLogger(__name__)

PLATFORM = "teams"
# Teams shows an error on the card when an invoke is not answered in about 5 s; engine work that takes
# longer carries on after the answer and shows up on the card.
INVOKE_BUDGET_S = 3.0
MEMBER_LOOKUP_S = 1.5
ACTIVITY_TTL_S = 3600   # the connector re-delivers an activity it thinks we missed
INVOKE_TTL_S = 30       # a double click arrives within seconds
MEMBER_TTL_S = 600
MESSAGE_TYPE = "application/vnd.microsoft.activity.message"
ERROR_TYPE = "application/vnd.microsoft.error"
_TAG = re.compile(r"<[^>]+>")


class _AuthConfig:
    """The attribute names ConfigurationBotFrameworkAuthentication reads, from our settings. No app id means
    no JWT check (the Bot Framework Emulator); a tenant id means a single-tenant bot registration."""

    def __init__(self, settings: Settings) -> None:
        self.APP_ID = settings.microsoft_app_id or ""
        self.APP_PASSWORD = settings.microsoft_app_password.get_secret_value() if settings.microsoft_app_password \
            else ""
        self.APP_TENANTID = settings.microsoft_app_tenant_id or ""
        self.APP_TYPE = "SingleTenant" if settings.microsoft_app_tenant_id else "MultiTenant"


def cloud_adapter(settings: Settings) -> CloudAdapter:
    return CloudAdapter(ConfigurationBotFrameworkAuthentication(_AuthConfig(settings)))


class TeamsAdapter:
    def __init__(self, services: Services, settings: Settings, *, redis,
                 dedup: Callable[[str, bool], None] | None = None,
                 wake_outbox: Callable[[], None] = lambda: None) -> None:
        self.wake_outbox = wake_outbox  # a handler queued its answer: send it now, not at the next poll
        self._slots = asyncio.Semaphore(settings.handler_concurrency)
        self.services = services
        self.dedup = dedup  # counts re-deliveries and double clicks recognised (bot.metrics.Metrics.dedup)
        self.settings = settings
        self.redis = redis
        self.cloud = cloud_adapter(settings)
        # msrest warns about every Teams-only field it does not model (teamsChannelId, legacy...): noise.
        logging.getLogger("msrest.serialization").setLevel(logging.ERROR)
        self.cloud.on_turn_error = self._on_turn_error
        self.references = References(redis)
        self._members: dict[str, tuple[Any, float]] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- transport -------------------------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /api/messages: authenticate (JWT unless no app id is set), run the turn, answer."""
        if "application/json" not in request.headers.get("Content-Type", ""):
            return web.json_response({"error": "expected application/json"}, status=415)
        try:
            activity = Activity().deserialize(await request.json())
        except Exception:  # noqa: BLE001 - any undecodable body is the sender's problem
            return web.json_response({"error": "not a Bot Framework activity"}, status=400)
        if not activity.type:
            return web.json_response({"error": "not a Bot Framework activity"}, status=400)
        if not self.settings.microsoft_app_id and not _on_loopback(activity.service_url):
            # Unauthenticated (Emulator) mode: anyone could name any serviceUrl and have the bot post to it.
            log.warning("refused an unauthenticated activity for %s: set MicrosoftAppId to serve Teams",
                        activity.service_url)
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            auth = await self.cloud.bot_framework_authentication.authenticate_request(
                activity, request.headers.get("Authorization", ""))
        except Exception as exc:  # noqa: BLE001 - a token that cannot be verified is refused, whatever the cause
            log.info("refused a Bot Framework request: %s", type(exc).__name__)
            return web.json_response({"error": "unauthorized"}, status=401)
        invoke = await self.cloud.process_activity(auth, activity, self.on_turn)
        if invoke is None:
            return web.Response(status=200)
        # Message answers to card actions carry a string `value`, which botbuilder's serializer refuses.
        body = invoke.body if isinstance(invoke.body, (dict, list, str)) or invoke.body is None \
            else serializer_helper(invoke.body)
        return web.json_response(body, status=int(invoke.status))

    # --- the turn ----------------------------------------------------------------------------------

    async def on_turn(self, context: TurnContext) -> None:
        activity = context.activity
        await asyncio.to_thread(self.references.remember, activity)
        if activity.from_property and activity.recipient and activity.from_property.id == activity.recipient.id:
            return  # never answer ourselves
        if activity.type == ActivityTypes.message:
            await self._on_message(context)
        elif activity.type == ActivityTypes.invoke and activity.name == "adaptiveCard/action":
            await self._on_card_action(context)
        # conversationUpdate (installed, members added) needs nothing more than the reference kept above

    async def _on_message(self, context: TurnContext) -> None:
        activity = context.activity
        conversation = activity.conversation
        if conversation is None or not activity.from_property:
            return
        kind = conversation.conversation_type or "personal"
        if kind != "personal" and not _mentions_bot(activity):
            return  # in channels and group chats the bot answers when @mentioned
        if not await self._first_time(f"warroom:teams:activity:{conversation.id}:{activity.id}", ACTIVITY_TTL_S):
            return
        channel = base_conversation(conversation.id)
        # A top-level @mention in a channel starts a thread under itself, as in Slack; chats have no threads.
        thread = (thread_of(conversation.id) or activity.id) if kind == "channel" else None
        message = ChatMessage(platform=PLATFORM, channel=channel, text=_plain_text(activity),
                              user=await self._actor(context), thread=thread, message_id=activity.id)
        self._spawn(self._work(handle_message, message, on_error=message))

    async def _on_card_action(self, context: TurnContext) -> None:
        activity = context.activity
        action = (activity.value or {}).get("action") or {} if isinstance(activity.value, dict) else {}
        data = action.get("data") if isinstance(action.get("data"), dict) else {}
        verb = action.get("verb") or data.get("verb")
        actor = await self._actor(context)
        conversation = activity.conversation
        channel = base_conversation(conversation.id)
        if verb in (APPROVE, REJECT, RETRY):
            try:
                step_id = int(data["step_id"])
            except (KeyError, TypeError, ValueError):
                return await _answer(context, 400, ERROR_TYPE, {"code": "BadRequest", "message": "no step id"})
            key = f"warroom:teams:invoke:{verb}:{step_id}:{activity.reply_to_id}:{actor.id}"
            if not await self._first_time(key, INVOKE_TTL_S):
                return await _answer(context, 200, MESSAGE_TYPE, "Already being handled.")
            decision = StepDecision(step_id=step_id, approve=verb in (APPROVE, RETRY), actor=actor, channel=channel,
                                    message_id=activity.reply_to_id)
            asker = ChatMessage(platform=PLATFORM, channel=channel, text="", user=actor,
                                thread=thread_of(conversation.id))
            text = await self._within_deadline(decide, decision, asker=asker)
        elif verb == FEEDBACK:
            text = await self._within_deadline(
                record_feedback, actor=actor, title=str(data.get("title") or ""), service=data.get("service"),
                helpful=bool(data.get("helpful")), channel=channel, message_id=activity.reply_to_id,
                thread_id=thread_of(conversation.id), asker=None)
        elif verb == ALERT_ACTION:
            try:
                group_id = int(data["group"])
            except (KeyError, TypeError, ValueError):
                return await _answer(context, 400, ERROR_TYPE, {"code": "BadRequest", "message": "no alert group"})
            key = f"warroom:teams:invoke:{verb}:{data.get('action')}:{group_id}:{activity.reply_to_id}:{actor.id}"
            if not await self._first_time(key, INVOKE_TTL_S):
                return await _answer(context, 200, MESSAGE_TYPE, "Already being handled.")
            text = await self._within_deadline(alert_action, action=str(data.get("action")), group_id=group_id,
                                               actor=actor, asker=None)
        elif isinstance(verb, str) and verb.startswith(LEARN) and verb[len(LEARN):] in ("draft", "approve", "edit",
                                                                                           "reject"):
            try:
                incident_id = int(data["incident_id"])
                draft_id = int(data["draft_id"]) if data.get("draft_id") is not None else None
            except (KeyError, TypeError, ValueError):
                return await _answer(context, 400, ERROR_TYPE, {"code": "BadRequest", "message": "no incident id"})
            key = f"warroom:teams:invoke:{verb}:{draft_id or incident_id}:{activity.reply_to_id}:{actor.id}"
            if not await self._first_time(key, INVOKE_TTL_S):
                return await _answer(context, 200, MESSAGE_TYPE, "Already being handled.")
            where = Where(platform=PLATFORM, channel=channel, thread_id=thread_of(conversation.id))
            text = await self._within_deadline(click_and_reply, actor, action=verb[len(LEARN):],
                                               incident_id=incident_id, draft_id=draft_id, where=where,
                                               yaml_text=str(data.get(YAML_INPUT) or ""), asker=None)
        else:
            return await _answer(context, 400, ERROR_TYPE, {"code": "BadRequest", "message": f"unknown verb {verb!r}"})
        await _answer(context, 200, MESSAGE_TYPE, text)

    async def _on_turn_error(self, context: TurnContext, error: Exception) -> None:
        log.error("Teams turn failed: %s", error, exc_info=error)

    # --- helpers -------------------------------------------------------------------------------------

    async def _within_deadline(self, func: Callable[..., Any], *args, asker: ChatMessage | None, **kwargs) -> str:
        """Run a handler off the event loop; answer with its outcome if it is quick enough for the invoke,
        else say it is under way and let the card (or a note in the thread) tell the rest."""
        task = asyncio.ensure_future(asyncio.to_thread(func, self.services, *args, **kwargs))
        done, _ = await asyncio.wait({task}, timeout=INVOKE_BUDGET_S)
        if not done:
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._late(t, asker))
            return "Working on it: the card will show the outcome."
        try:
            return _text_of(task.result())
        except Exception as exc:  # noqa: BLE001 - told to the clicker, never swallowed
            log.exception("handling a Teams card action failed")
            return f"warroom could not do that ({type(exc).__name__}). Try again; if it keeps failing, " \
                   "an operator can run `warroom doctor`."

    def _late(self, task: asyncio.Task, asker: ChatMessage | None) -> None:
        """An outcome that came after the invoke was answered: a refusal is posted in the thread."""
        self._tasks.discard(task)
        if task.cancelled() or asker is None:
            return
        outcome = task.exception() or task.result()
        if isinstance(outcome, Reply) and outcome.ok:
            return
        text = _text_of(outcome) if isinstance(outcome, Reply) else \
            f"warroom could not do that ({type(outcome).__name__})."
        self._spawn(asyncio.to_thread(reply, self.services, asker, notice("Not run", text, style="warning"),
                                      private=True))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # keep a reference: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def _work(self, func: Callable[..., Any], *args, on_error: ChatMessage | None = None, **kwargs) -> None:
        await run_handler(self.services, "Teams", func, *args, on_error=on_error, slots=self._slots, **kwargs)
        self.wake_outbox()

    async def _first_time(self, key: str, ttl: int) -> bool:
        return await first_time(self.redis, key, ttl, record=self.dedup)

    async def _actor(self, context: TurnContext) -> Actor:
        """Who acted: the AAD object id as the id (stable across teams and chats), and the email or UPN from
        the member record, so approvers may be listed by either."""
        sender = context.activity.from_property
        member = await self._member(context, sender.id)
        aad = sender.aad_object_id or getattr(member, "aad_object_id", None)
        upn = getattr(member, "user_principal_name", None)
        email = getattr(member, "email", None) or upn
        return Actor(id=aad or sender.id, platform=PLATFORM, name=sender.name or getattr(member, "name", None),
                     email=email, upn=upn)

    async def _member(self, context: TurnContext, user_id: str):
        cached = self._members.get(user_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        try:
            member = await asyncio.wait_for(TeamsInfo.get_member(context, user_id), timeout=MEMBER_LOOKUP_S)
        except Exception as exc:  # noqa: BLE001 - the AAD id alone still identifies the user
            log.info("Teams member lookup for %s failed: %s", user_id, exc)
            member = None
        self._members[user_id] = (member, time.monotonic() + MEMBER_TTL_S)
        return member


async def _answer(context: TurnContext, status: int, kind: str, value: Any) -> None:
    """The invoke response Universal Actions expect: {statusCode, type, value}."""
    body = {"statusCode": status, "type": kind, "value": value}
    await context.send_activity(Activity(type=ActivityTypes.invoke_response,
                                         value=InvokeResponse(status=200, body=body)))


def _text_of(outcome: Any) -> str:
    return outcome.text if isinstance(outcome, Reply) else str(outcome)


def _mentions_bot(activity: Activity) -> bool:
    bot = activity.recipient.id if activity.recipient else None
    # botbuilder hands mentions back as plain entities: the `mentioned` account is in additional_properties.
    return any(((m.additional_properties or {}).get("mentioned") or {}).get("id") == bot
               for m in TurnContext.get_mentions(activity))


def _on_loopback(url: str | None) -> bool:
    host = urlsplit(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _plain_text(activity: Activity) -> str:
    """The message without the bot's @mention and without Teams' HTML (other people's names stay)."""
    text = activity.text or ""
    if _mentions_bot(activity):
        text = TurnContext.remove_recipient_mention(activity) or ""
    return html.unescape(_TAG.sub(" ", text)).replace("\xa0", " ").strip()
