"""The Bot Framework connector (Teams' side of a bot), stood in for by a real HTTP server on loopback. The
activities tests POST to `warroom serve` carry this server's URL as `serviceUrl`, so the real botbuilder
client inside serve replies here, exactly as it would to `https://smba.trafficmanager.net/...`.

It speaks the Bot Connector v3 routes the bot uses:
  POST /v3/conversations                                   create a conversation (a new channel thread)
  POST /v3/conversations/{id}/activities                   send to a conversation
  POST /v3/conversations/{id}/activities/{activityId}      reply to an activity
  PUT  /v3/conversations/{id}/activities/{activityId}      update an activity in place
  GET  /v3/conversations/{id}/members/{userId}             one member (TeamsInfo.get_member)

and it is strict where Teams is strict, recording what would break in `.violations`:
  * every Adaptive Card is validated against the official 1.5 schema in the shared corpus;
  * an activity over Teams' ~28 KB message limit is refused with 413;
  * per conversation, more than 7 messages in a second or 60 in 30 seconds gets a 429 with Retry-After
    (recorded in `.rate_limited`);
  * the next N calls of a kind can be scripted to fail (`fail_next("reply", 502)`).

Conversation ids `19:…@thread.tacv2;messageid=<root>` address the thread <root> of channel `19:…`; messages
are stored per channel, with their thread root, so tests can read a channel as Teams shows it."""
from __future__ import annotations

import itertools
import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from jsonschema import Draft6Validator
from jsonschema.exceptions import best_match

from tests.http_helpers import send_json

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "msteams"
SCHEMA_PATH = CORPUS / "adaptive-cards" / "schemas" / "adaptive-card-1.5.0.json"
ACTIVITIES = CORPUS / "bot-framework-activities" / "teams-net"
CARD = "application/vnd.microsoft.card.adaptive"
MAX_ACTIVITY_BYTES = 28 * 1024
LIMITS = ((7, 1.0), (60, 30.0))   # Teams' per-conversation bot message limits

_validator = Draft6Validator(json.loads(SCHEMA_PATH.read_text()))


def card_violations(card: Any) -> list[str]:
    """Schema errors of one Adaptive Card, plus what Teams needs for Universal Actions."""
    errors = []
    error = best_match(_validator.iter_errors(card))
    if error is not None:
        errors.append(f"schema: {error.message} at {'/'.join(map(str, error.absolute_path))}")
    if isinstance(card, dict) and card.get("version") != "1.5":
        errors.append(f"version {card.get('version')!r}: Action.Execute needs 1.5")
    return errors


def base(conversation_id: str) -> str:
    return conversation_id.split(";", 1)[0]


def thread_of(conversation_id: str) -> str | None:
    for part in conversation_id.split(";")[1:]:
        if part.startswith("messageid="):
            return part.removeprefix("messageid=")
    return None


class TeamsStandIn:
    def __init__(self, *, users: dict[str, dict] | None = None) -> None:
        self.users = users or {}                 # Teams user id (29:…) -> member record
        self._lock = threading.Lock()
        self._ids = itertools.count(int(time.time() * 1000))
        self._messages: dict[str, list[dict]] = defaultdict(list)
        self._sent: dict[str, deque] = defaultdict(deque)
        self._failures: list[dict] = []
        self.calls: list[dict] = []
        self.violations: list[str] = []
        self.rate_limited: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "TeamsStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def do_PUT(self) -> None:
                standin._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    # --- scripting and reading ------------------------------------------------------------------------------

    def fail_next(self, kind: str, status: int, *, channel: str | None = None, retry_after: float | None = None,
                  times: int = 1) -> None:
        """The next `times` calls of `kind` (create, send, reply, update, member), to `channel` if given,
        answer `status` (with a Retry-After header when `retry_after` is given). Queued failures apply in order."""
        with self._lock:
            self._failures.extend({"kind": kind, "channel": channel and base(channel), "status": status,
                                   "retry_after": retry_after} for _ in range(times))

    def messages(self, channel: str) -> list[dict]:
        with self._lock:
            return json.loads(json.dumps(self._messages[base(channel)]))

    def calls_to(self, kind: str, channel: str | None = None) -> list[dict]:
        with self._lock:
            return [dict(c) for c in self.calls if c["kind"] == kind and channel in (None, c["channel"])]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}")

    # --- the connector ------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parts = [unquote(p) for p in request.path.split("?", 1)[0].strip("/").split("/")]
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return send_json(request, 400, {"error": {"code": "BadSyntax", "message": "not JSON"}})
        kind = _kind(method, parts)
        call = {"kind": kind, "method": method, "path": parts, "body": body, "at": time.monotonic(),
                "authorization": request.headers.get("Authorization")}
        if kind is None:
            return send_json(request, 404, {"error": {"code": "NotFound", "message": request.path}})
        call["channel"] = base(body["channelData"]["channel"]["id"]) if kind == "create" else base(parts[2])
        with self._lock:
            self.calls.append(call)
            failure = next((f for f in self._failures if f["kind"] == kind
                            and f["channel"] in (None, call["channel"])), None)
            if failure is not None:
                self._failures.remove(failure)
        if failure is not None:
            status, retry_after = failure["status"], failure["retry_after"]
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return send_json(request, status, {"error": {"code": f"Scripted{status}", "message": "scripted"}}, headers)
        if kind == "member":
            return self._member(request, parts[4])
        activity = body.get("activity") if kind == "create" else body
        problems = self._check(activity, raw)
        if problems:
            with self._lock:
                self.violations.extend(problems)
            return send_json(request, 413 if any("bytes" in p for p in problems) else 400,
                         {"error": {"code": "BadArgument", "message": "; ".join(problems)}})
        channel = call["channel"]
        if kind != "update":
            retry = self._over_limit(channel)
            if retry:
                with self._lock:
                    self.rate_limited.append(channel)
                return send_json(request, 429, {"error": {"code": "TooManyRequests", "message": "slow down"}},
                             {"Retry-After": f"{retry:.2f}"})
        if kind == "create":
            message = self._store(channel, activity, thread=None)
            return send_json(request, 201, {"id": f"{channel};messageid={message['id']}", "activityId": message["id"],
                                        "serviceUrl": self.url})
        if kind == "update":
            return self._update(request, channel, parts[4], activity)
        thread = thread_of(parts[2]) or (parts[4] if kind == "reply" and parts[2].startswith("19:") else None)
        message = self._store(channel, activity, thread=thread, reply_to=parts[4] if kind == "reply" else None)
        return send_json(request, 201 if kind == "send" else 200, {"id": message["id"]})

    def _check(self, activity: dict, raw: bytes) -> list[str]:
        problems = []
        if len(raw) > MAX_ACTIVITY_BYTES:
            problems.append(f"activity of {len(raw)} bytes is over Teams' {MAX_ACTIVITY_BYTES}-byte limit")
        for attachment in activity.get("attachments") or []:
            if attachment.get("contentType") == CARD:
                problems.extend(card_violations(attachment.get("content")))
        if not (activity.get("attachments") or activity.get("text")):
            problems.append("an empty message")
        return problems

    def _over_limit(self, channel: str) -> float:
        """Seconds to wait when this conversation is over a Teams limit; records the send otherwise."""
        now = time.monotonic()
        with self._lock:
            sent = self._sent[channel]
            for limit, seconds in LIMITS:
                recent = [t for t in sent if now - t < seconds]
                if len(recent) >= limit:
                    return seconds - (now - recent[-limit])
            sent.append(now)
            while len(sent) > 60:
                sent.popleft()
        return 0.0

    def _store(self, channel: str, activity: dict, *, thread: str | None, reply_to: str | None = None) -> dict:
        with self._lock:
            message = {"id": str(next(self._ids)), "thread": thread, "replyToId": reply_to,
                       "attachments": activity.get("attachments") or [], "text": activity.get("text"),
                       "summary": activity.get("summary"), "from": activity.get("from"), "updates": 0}
            self._messages[channel].append(message)
            return message

    def _update(self, request, channel: str, activity_id: str, activity: dict) -> None:
        with self._lock:
            message = next((m for m in self._messages[channel] if m["id"] == activity_id), None)
            if message is not None:
                message.update(attachments=activity.get("attachments") or [], text=activity.get("text"),
                               updates=message["updates"] + 1)
        if message is None:
            return send_json(request, 404, {"error": {"code": "ActivityNotFound", "message": activity_id}})
        return send_json(request, 200, {"id": activity_id})

    def _member(self, request, user_id: str) -> None:
        member = self.users.get(user_id)
        if member is None:
            return send_json(request, 404, {"error": {"code": "MemberNotFound", "message": user_id}})
        return send_json(request, 200, {"id": user_id, **member})


def _kind(method: str, parts: list[str]) -> str | None:
    if parts[:2] != ["v3", "conversations"]:
        return None
    if method == "POST" and len(parts) == 2:
        return "create"
    if len(parts) == 4 and parts[3] == "activities" and method == "POST":
        return "send"
    if len(parts) == 5 and parts[3] == "activities":
        return {"POST": "reply", "PUT": "update"}.get(method)
    if len(parts) == 5 and parts[3] == "members" and method == "GET":
        return "member"
    return None




# --- inbound activities, from the real Teams captures in the shared corpus ---------------------------------

def _sample(name: str) -> dict:
    return json.loads((ACTIVITIES / name).read_text())


def channel_mention(text: str, *, service_url: str, channel: str, root: str, user: dict, bot: dict,
                    activity_id: str) -> dict:
    """A channel message @mentioning the bot (Teams' own capture, re-addressed): `text` follows the mention."""
    activity = _sample("message_channel_reply_with_mention.json")
    mention = f"<at>{bot['name']}</at>"
    activity.update(id=activity_id, serviceUrl=service_url, text=f"{mention} {text}", recipient=bot,
                    **{"from": user}, attachments=[])
    activity["conversation"]["id"] = f"{channel};messageid={root}"
    activity["channelData"]["channel"]["id"] = activity["channelData"]["teamsChannelId"] = channel
    activity["entities"][0] = {"mentioned": bot, "text": mention, "type": "mention"}
    return activity


def personal_message(text: str, *, service_url: str, conversation: str, user: dict, bot: dict,
                     activity_id: str) -> dict:
    """A message in the bot's personal chat: no mention needed."""
    activity = _sample("invoke_adaptiveCard_action_Action.Execute.json")
    for key in ("value", "name", "replyToId"):
        activity.pop(key)
    activity["channelData"].pop("legacy")
    activity["channelData"].pop("source")
    activity.update(type="message", id=activity_id, serviceUrl=service_url, text=text, textFormat="plain",
                    recipient=bot, **{"from": user})
    activity["conversation"]["id"] = conversation
    return activity


def card_action(verb: str, data: dict, *, service_url: str, conversation: dict, reply_to: str, user: dict,
                bot: dict, channel_data: dict | None = None) -> dict:
    """An `adaptiveCard/action` invoke, as Teams sends when Action.Execute is clicked."""
    activity = _sample("invoke_adaptiveCard_action_Action.Execute.json")
    activity.update(id=f"f:{time.time_ns()}", serviceUrl=service_url, replyToId=reply_to, recipient=bot,
                    conversation=conversation, **{"from": user})
    activity["value"]["action"] = {"type": "Action.Execute", "title": verb.title(), "verb": verb, "data": data}
    if channel_data:
        activity["channelData"].update(channel_data)
    return activity


def bot_added(*, service_url: str, channel: str, team: str, bot: dict, user: dict, tenant: str) -> dict:
    """conversationUpdate: the app was installed in a team; Teams addresses it to the General channel."""
    return {"type": "conversationUpdate", "id": f"f:{time.time_ns()}", "channelId": "msteams",
            "serviceUrl": service_url, "from": user, "recipient": bot, "membersAdded": [bot],
            "conversation": {"id": channel, "isGroup": True, "conversationType": "channel", "tenantId": tenant},
            "channelData": {"team": {"id": team}, "eventType": "teamMemberAdded", "tenant": {"id": tenant},
                            "channel": {"id": channel}},
            "timestamp": "2026-01-07T06:04:59.89Z"}
