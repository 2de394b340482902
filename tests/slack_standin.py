"""Slack's network edge, stood in for by a real server: an aiohttp HTTP + WebSocket server on loopback
that speaks the Slack Web API, response_url webhooks and Socket Mode, so the real `slack_sdk` /
`slack_bolt` clients (in this process or in a `warroom serve` subprocess) can be pointed at it with
`base_url=standin.url` / `SLACK_API_URL`.

It is strict where Slack is strict and records where Slack would merely be unhappy:
  * Block Kit is checked against the JSON Schema in the shared corpus plus the documented limits
    (50 blocks, 3000-char sections, 75-char button labels...); a bad message is refused with
    `invalid_blocks` exactly as Slack does, and the reason is appended to `.violations`.
  * chat.postMessage / chat.update / chat.postEphemeral share a per-channel token bucket; when it is
    empty the answer is a real HTTP 429 with `Retry-After`, and retrying before that has elapsed is
    recorded in `.early_retries`.
  * Socket Mode envelopes not acked (or acked later than Slack's 3 s), unknown or duplicate acks are
    violations too.

The server runs in its own thread with its own event loop, so blocking test code (and async tests
in their own loop) can talk to it; everything the tests read is guarded by one lock.

Module-level helpers build the inbound side: signed request headers (`sign`) and payloads shaped
like Slack's (`slash_command`, `block_action`, `event`, `message_event`, `app_mention_event`,
`socket_envelope`), starting from bolt-python's real test payloads in the shared corpus.
"""
from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import hmac
import inspect
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSCloseCode, WSMsgType, web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "slack"
SCHEMA_PATH = CORPUS / "block-kit-schema" / "slack-block-kit.schema.json"
PAYLOADS = CORPUS / "bolt-python-test-payloads"

TEAM_ID = "T0TEAM"
TEAM_DOMAIN = "warroom-test"
BOT_USER_ID = "U0WARROOM"
BOT_ID = "B0WARROOM"
APP_ID = "A0WARROOM"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# Documented limits (docs.slack.dev Block Kit reference and chat.postMessage).
MAX_MESSAGE_BLOCKS = 50
MAX_TEXT = 40000
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_ATTACHMENTS = 100
SOCKET_ACK_DEADLINE = 3.0     # Slack retries an envelope that is not acked within 3 seconds
RESPONSE_URL_USES = 5         # a response_url accepts up to 5 responses (within 30 minutes)
EARLY_GRACE = 0.005           # timer jitter between the client's sleep and our clock, not a real early retry

RATE_LIMITED_METHODS = {"chat.postMessage", "chat.update", "chat.postEphemeral"}
APP_TOKEN_METHODS = {"apps.connections.open"}


@dataclass(frozen=True)
class Call:
    method: str
    params: dict
    at: float           # time.monotonic() when the request arrived
    status: int
    ok: bool
    error: str | None


# --------------------------------------------------------------------------------------------------
# Block Kit checks


@functools.cache
def _block_validators() -> dict[str, Draft202012Validator]:
    """One validator per block type, so errors name the block the author meant instead of the
    schema's top-level `oneOf` ("is not valid under any of the given schemas")."""
    schema = json.loads(SCHEMA_PATH.read_text())
    defs = schema["$defs"]
    validators = {}
    for ref in defs["block"]["oneOf"]:
        name = ref["$ref"].rsplit("/", 1)[-1]
        block_type = defs[name]["properties"]["type"]["const"]
        validators[block_type] = Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})
    return validators


def _path(prefix: str, parts) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _most_specific(error: ValidationError) -> ValidationError:
    """Descend through oneOf/anyOf failures into the branch whose `type` matched the instance
    (a mrkdwn object that is too long should say "too long", not "not plain_text")."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        matching = [errs for errs in branches.values() if not any(list(e.relative_path) == ["type"] for e in errs)]
        error = best_match(matching[0] if len(matching) == 1 else error.context)
    return error


def _describe(error: ValidationError, prefix: str) -> tuple[str, str]:
    """(path, readable message) for a schema error, without dumping a 3000-char instance."""
    where = _path(prefix, error.absolute_path)
    kind, limit, value = error.validator, error.validator_value, error.instance
    if kind == "maxLength":
        return where, f"{where} is {len(value)} chars > {limit}"
    if kind == "minLength":
        return where, f"{where} is {len(value)} chars < {limit}" if value else f"{where} is empty"
    if kind == "maxItems":
        return where, f"{where} has {len(value)} items > {limit}"
    if kind == "minItems":
        return where, f"{where} has {len(value)} items < {limit}"
    if kind in ("const", "enum"):
        return where, f"{where} is {_short(value)}, expected {_short(limit)}"
    return where, f"{where}: {_clip(error.message, 200)}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any, limit: int = 60) -> str:
    return _clip(repr(value), limit)


def _text_of(obj: Any) -> str | None:
    return obj.get("text") if isinstance(obj, dict) and isinstance(obj.get("text"), str) else None


def _limit_violations(blocks: list, prefix: str) -> list[tuple[str, str]]:
    """Limits checked explicitly, whether or not the schema encodes them, with specific messages."""
    found: list[tuple[str, str]] = []

    def too_long(obj: Any, where: str, limit: int) -> None:
        text = _text_of(obj)
        if text is not None and len(text) > limit:
            found.append((f"{where}.text", f"{where}.text is {len(text)} chars > {limit}"))

    def too_many(items: Any, where: str, limit: int) -> None:
        if isinstance(items, list) and len(items) > limit:
            found.append((where, f"{where} has {len(items)} items > {limit}"))

    for i, block in enumerate(blocks):
        where = f"{prefix}[{i}]"
        if not isinstance(block, dict):
            found.append((where, f"{where} is not an object"))
            continue
        kind = block.get("type")
        if kind == "section":
            too_long(block.get("text"), f"{where}.text", MAX_SECTION_TEXT)
            fields = block.get("fields")
            too_many(fields, f"{where}.fields", MAX_SECTION_FIELDS)
            for j, field in enumerate(fields if isinstance(fields, list) else []):
                too_long(field, f"{where}.fields[{j}]", MAX_FIELD_TEXT)
        elif kind == "header":
            too_long(block.get("text"), f"{where}.text", MAX_HEADER_TEXT)
        elif kind == "context":
            too_many(block.get("elements"), f"{where}.elements", MAX_CONTEXT_ELEMENTS)
        elif kind == "actions":
            too_many(block.get("elements"), f"{where}.elements", MAX_ACTIONS_ELEMENTS)

    first_seen: dict[tuple[str, str], str] = {}
    for where, node in _walk(blocks, prefix):
        if not isinstance(node, dict):
            continue
        if node.get("type") == "button":
            too_long(node.get("text"), f"{where}.text", MAX_BUTTON_TEXT)
            value = node.get("value")
            if isinstance(value, str) and len(value) > MAX_BUTTON_VALUE:
                found.append((f"{where}.value", f"{where}.value is {len(value)} chars > {MAX_BUTTON_VALUE}"))
        if node.get("type") in ("plain_text", "mrkdwn") and _text_of(node) == "":
            found.append((f"{where}.text", f"{where}.text is empty"))
        for key in ("block_id", "action_id"):
            ident = node.get(key)
            if not isinstance(ident, str):
                continue
            if len(ident) > MAX_ID:
                found.append((f"{where}.{key}", f"{where}.{key} is {len(ident)} chars > {MAX_ID}"))
            if (key, ident) in first_seen:
                found.append((f"{where}.{key}",
                              f"{where}.{key} {_short(ident)} duplicates {first_seen[(key, ident)]}.{key}"))
            else:
                first_seen[(key, ident)] = where
    return found


def _walk(node: Any, where: str):
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def _covers(vague: str, specific: str) -> bool:
    return specific.startswith(vague + ".") or specific.startswith(vague + "[")


def block_kit_violations(blocks: Any, *, prefix: str = "blocks", max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Everything Slack would refuse in a message's `blocks` (empty list: nothing to refuse)."""
    if not isinstance(blocks, list):
        return [f"{prefix} is not a JSON array of blocks"]
    explicit = _limit_violations(blocks, prefix)
    messages = [message for _, message in explicit]
    if len(blocks) > max_blocks:
        messages.insert(0, f"{prefix} has {len(blocks)} blocks > {max_blocks}")
    explicit_paths = {path for path, _ in explicit}
    validators = _block_validators()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        validator = validators.get(block.get("type"))
        if validator is None:
            messages.append(f"{prefix}[{i}].type {_short(block.get('type'))} is not a known block type")
            continue
        for error in validator.iter_errors(block):
            vague = error.validator in ("oneOf", "anyOf")
            where, message = _describe(_most_specific(error), f"{prefix}[{i}]")
            # The explicit checks already said it, more precisely.
            if where in explicit_paths or (vague and any(_covers(where, p) for p in explicit_paths)):
                continue
            if message not in messages:
                messages.append(message)
    return messages


def _json_pointer(message: str) -> str:
    path = message.split(" ", 1)[0].rstrip(":")
    return "/" + re.sub(r"\[(\d+)\]", r"/\1", path).replace(".", "/")


# --------------------------------------------------------------------------------------------------
# Answers


@dataclass
class _Reply:
    body: dict | str
    status: int = 200
    headers: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and isinstance(self.body, dict) and bool(self.body.get("ok"))

    @property
    def error(self) -> str | None:
        if isinstance(self.body, dict):
            return self.body.get("error")
        return None if self.status == 200 else f"http_{self.status}"

    def response(self) -> web.Response:
        if isinstance(self.body, dict):
            return web.json_response(self.body, status=self.status, headers=self.headers)
        # An HTML page, as Slack's edge answers most 5xx: the client cannot parse it as JSON.
        return web.Response(text=self.body, status=self.status, headers=self.headers, content_type="text/html")


def _ok(**fields) -> _Reply:
    return _Reply({"ok": True, **fields})


def _error(error: str, **fields) -> _Reply:
    return _Reply({"ok": False, "error": error, **fields})


def _missing(*names: str) -> _Reply:
    messages = [f"[ERROR] missing required field: {name}" for name in names]
    return _error("invalid_arguments", response_metadata={"messages": messages})


def _is_channel(channel: Any) -> bool:
    return isinstance(channel, str) and re.fullmatch(r"[CGD][A-Z0-9]{2,}", channel) is not None


def _ts_key(ts: str) -> Decimal:
    return Decimal(ts)


class _Bucket:
    """Token bucket: `capacity` calls at once, refilled continuously at `rate` per second."""

    def __init__(self, capacity: int, now: float) -> None:
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float, rate: float, capacity: int) -> bool:
        self.tokens = min(float(capacity), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _seconds(value: float) -> str:
    # Slack sends whole seconds; a fractional value is only sent when the test asked for one.
    return f"{value:g}"


# --------------------------------------------------------------------------------------------------
# The server


class SlackStandIn:
    bot_user_id = BOT_USER_ID
    bot_id = BOT_ID
    team_id = TEAM_ID
    app_id = APP_ID

    def __init__(self, *, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token",
                 rate_per_s: float = 1.0, burst: int = 3, rate_limit: bool = True, retry_after: float = 1,
                 users: dict[str, dict] | None = None) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.users = dict(users or {})
        self.url = ""
        self.base = ""
        self.socket_connected = threading.Event()

        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._messages: dict[str, dict[str, dict]] = {}     # channel -> ts -> stored message
        self._ephemerals: list[dict] = []
        self._responses: list[dict] = []
        self._response_names: list[str] = []
        self._response_bindings: dict[str, tuple[str | None, str | None]] = {}
        self._reactions: list[dict] = []
        self._violations: list[str] = []
        self._rate_limited: list[tuple[str, float, float]] = []
        self._early_retries: list[str] = []
        self._socket_acks: list[dict] = []
        self._failures: dict[str, deque[tuple[int, str | None]]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._blocked_until: dict[str, float] = {}
        # Slack timestamps are epoch seconds with 6 decimals; ours increase by 100 µs per message.
        self._ts_micros = int(time.time()) * 1_000_000
        self._tickets: set[str] = set()

        # Only touched on the server's own loop.
        self._sockets: set[web.WebSocketResponse] = set()
        self._socket: web.WebSocketResponse | None = None
        self.socket_connections = 0  # hellos sent: a reconnect is complete when this grows
        self._sent_envelopes: dict[str, dict] = {}   # envelope_id -> {"waiter", "sent_at", "acked"}

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict], _Reply]] = {
            "api.test": lambda p: _ok(args={k: v for k, v in p.items() if isinstance(v, str)}),
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "reactions.add": self._reactions_add,
            "users.info": self._users_info,
            "users.lookupByEmail": self._lookup_by_email,
            "conversations.replies": self._replies,
            "conversations.info": self._conversation_info,
        }

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "SlackStandIn":
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="slack-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"Slack stand-in did not start: {failure[0] if failure else 'timeout'}")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._thread = None

    def __enter__(self) -> "SlackStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, ready: threading.Event, failure: list) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 (reported to start())
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _serve(self) -> None:
        _block_validators()  # load the schema once, before the first request needs it
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/socket", self._socket_endpoint)
        # Short shutdown: tests stop the server while clients may still hold connections.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/api/"

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"stand-in stopped")
        for sent in self._sent_envelopes.values():
            if not sent["waiter"].done():
                sent["waiter"].cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- what tests read -------------------------------------------------------------------------

    def _snapshot(self, items: list) -> list:
        with self._lock:
            return copy.deepcopy(items)

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    @property
    def ephemerals(self) -> list[dict]:
        return self._snapshot(self._ephemerals)

    @property
    def responses(self) -> list[dict]:
        return self._snapshot(self._responses)

    def responses_to(self, name: str) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(body) for body, to in zip(self._responses, self._response_names) if to == name]

    @property
    def reactions(self) -> list[dict]:
        return self._snapshot(self._reactions)

    @property
    def violations(self) -> list[str]:
        return self._snapshot(self._violations)

    @property
    def rate_limited(self) -> list[tuple[str, float, float]]:
        return self._snapshot(self._rate_limited)

    @property
    def early_retries(self) -> list[str]:
        return self._snapshot(self._early_retries)

    @property
    def socket_acks(self) -> list[dict]:
        """Every ack received: {"envelope_id", "payload"?, "latency"}."""
        return self._snapshot(self._socket_acks)

    def messages(self, channel: str) -> list[dict]:
        """The channel's messages as stored, in ts order: `thread_ts` marks replies only (the API also
        puts it, with reply_count etc., on parents that have replies, as Slack does)."""
        with self._lock:
            stored = self._messages.get(channel, {})
            return [copy.deepcopy(stored[ts]) for ts in sorted(stored, key=_ts_key)]

    def thread(self, channel: str, ts: str) -> list[dict]:
        """Parent + replies as stored (`ts` may be the parent's or a reply's); [] if there is none."""
        with self._lock:
            root = self._thread_root(channel, ts)
            return [] if root is None else copy.deepcopy(self._thread_messages(channel, root))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            try:
                if predicate():
                    return
                last_error = None
            except Exception as exc:  # noqa: BLE001 (e.g. IndexError before the message exists)
                last_error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise AssertionError(self._timeout_report(predicate, timeout, last_error))

    def _timeout_report(self, predicate: Callable, timeout: float, last_error: BaseException | None) -> str:
        try:
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = getattr(predicate, "__name__", repr(predicate))
        recent = [f"  {c.method} -> {c.status} {'ok' if c.ok else c.error}" for c in self.calls[-15:]]
        lines = [f"timed out after {timeout:g}s waiting for: {what}"]
        if last_error is not None:
            lines.append(f"last evaluation raised {type(last_error).__name__}: {last_error}")
        lines.append(f"last {len(recent)} Web API calls:" if recent else "no Web API calls were made")
        lines += recent
        lines += [f"violation: {v}" for v in self.violations]
        if self.rate_limited:
            lines.append(f"{len(self.rate_limited)} requests were rate limited")
        return "\n".join(lines)

    # ---- what tests set up -----------------------------------------------------------------------

    def add_message(self, channel: str, *, text: str = "", user: str | None = None, bot_id: str | None = None,
                    subtype: str | None = None, thread_ts: str | None = None, attachments: list | None = None,
                    blocks: list | None = None, ts: str | None = None) -> dict:
        """Inject a message (a person's, or another integration's) that the bot can later read."""
        with self._lock:
            root = None
            if thread_ts:
                root = self._thread_root(channel, thread_ts)
                if root is None:
                    raise ValueError(f"no message {thread_ts} in {channel} to reply to")
            if ts is not None and ts in self._messages.get(channel, {}):
                raise ValueError(f"{channel} already has a message {ts}")
            message = {"type": "message", "subtype": subtype, "user": user, "bot_id": bot_id, "text": text}
            if bot_id:
                message["bot_profile"] = _bot_profile(bot_id)
            stored = self._store(channel, message, thread_ts=root, blocks=blocks, attachments=attachments, ts=ts)
            return self._render(channel, stored)

    def fail_next(self, method: str, *, status: int = 500, error: str | None = None, count: int = 1) -> None:
        """The next `count` calls to `method` fail: HTTP `status` (an HTML error page unless `error` is
        given), or HTTP 200 with {"ok": false, "error": error} when status is 200."""
        with self._lock:
            self._failures.setdefault(method, deque()).extend([(status, error)] * count)

    def response_url(self, name: str = "r1", *, channel: str | None = None, message_ts: str | None = None) -> str:
        """A response_url on this server. Bound to `channel` (and `message_ts`), it also acts like Slack's:
        `replace_original`/`delete_original` change that message, `response_type: in_channel` posts."""
        with self._lock:
            self._response_bindings[name] = (channel, message_ts)
        return f"{self.base}/response/{name}"

    # ---- Web API ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        method = request.match_info["method"]
        params, problem = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        with self._lock:
            reply = self._dispatch(method, params, token, problem, at)
            self._calls.append(Call(method, params, at, reply.status, reply.ok, reply.error))
        return reply.response()

    def _dispatch(self, method: str, params: dict, token: str | None, problem: str | None, at: float) -> _Reply:
        handler = self._methods.get(method)
        if handler is None:
            return _error("unknown_method", req_method=method)
        if problem:
            return _error(problem)
        refused = self._check_token(method, token)
        if refused:
            return refused
        failure = self._failures.get(method)
        if failure:
            return _injected(*failure.popleft())
        limited = self._rate_limit(method, params, at)
        if limited:
            return limited
        return handler(params)

    def _check_token(self, method: str, token: str | None) -> _Reply | None:
        wanted = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if not token:
            return _error("not_authed")
        if token == wanted:
            return None
        if token in (self.bot_token, self.app_token):
            return _error("not_allowed_token_type")
        return _error("invalid_auth")

    def _rate_limit(self, method: str, params: dict, now: float) -> _Reply | None:
        channel = params.get("channel")
        if not self.rate_limit or method not in RATE_LIMITED_METHODS or not isinstance(channel, str):
            return None
        blocked_until = self._blocked_until.get(channel)
        if blocked_until is not None and now < blocked_until - EARLY_GRACE:
            remaining = blocked_until - now
            self._early_retries.append(
                f"{method} {channel}: called {remaining:.3f}s before the Retry-After it was given had elapsed")
            return self._too_many(channel, now, max(1, math.ceil(remaining)))
        bucket = self._buckets.setdefault(channel, _Bucket(self.burst, now))
        if bucket.take(now, self.rate_per_s, self.burst):
            return None
        self._blocked_until[channel] = now + self.retry_after
        return self._too_many(channel, now, self.retry_after)

    def _too_many(self, channel: str, now: float, retry_after: float) -> _Reply:
        self._rate_limited.append((channel, now, retry_after))
        return _Reply({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": _seconds(retry_after)})

    def _violation(self, message: str) -> None:
        self._violations.append(message)

    def _content_problem(self, where: str, params: dict) -> tuple[str, list[str]] | None:
        """(error code, reasons) if Slack would refuse this message's text/blocks/attachments."""
        text = params.get("text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            return "msg_too_long", [f"text is {len(text)} chars > {MAX_TEXT}"]
        blocks = params.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            return "invalid_blocks_format", ["blocks is not a JSON array of blocks"]
        reasons = block_kit_violations(blocks) if blocks else []
        attachments = params.get("attachments")
        if attachments is not None:
            if not isinstance(attachments, list):
                return "invalid_attachments", ["attachments is not a JSON array"]
            if len(attachments) > MAX_ATTACHMENTS:
                return "too_many_attachments", [f"attachments has {len(attachments)} items > {MAX_ATTACHMENTS}"]
            for i, attachment in enumerate(attachments):
                if isinstance(attachment, dict) and attachment.get("blocks"):
                    reasons += block_kit_violations(attachment["blocks"], prefix=f"attachments[{i}].blocks")
        return ("invalid_blocks", reasons) if reasons else None

    def _refuse_content(self, where: str, params: dict) -> _Reply | None:
        problem = self._content_problem(where, params)
        if problem is None:
            return None
        code, reasons = problem
        for reason in reasons:
            self._violation(f"{where}: {reason}")
        if code == "invalid_blocks":
            errors = [f"{reason} [json-pointer:{_json_pointer(reason)}]" for reason in reasons]
            return _error(code, errors=errors, response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
        return _error(code)

    def _auth_test(self, params: dict) -> _Reply:
        return _ok(url=f"https://{TEAM_DOMAIN}.slack.com/", team=TEAM_DOMAIN, user="warroom", team_id=TEAM_ID,
                   user_id=BOT_USER_ID, bot_id=BOT_ID, is_enterprise_install=False)

    def _connections_open(self, params: dict) -> _Reply:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return _ok(url=f"ws://{self.base.removeprefix('http://')}/socket?ticket={ticket}")

    def _post_message(self, p: dict) -> _Reply:
        channel = p.get("channel")
        if not _is_channel(channel):
            return _error("channel_not_found")
        refused = self._refuse_content(f"chat.postMessage {channel}", p)
        if refused:
            return refused
        if not (p.get("text") or p.get("blocks") or p.get("attachments")):
            return _error("no_text")
        root = None
        if p.get("thread_ts"):
            root = self._thread_root(channel, str(p["thread_ts"]), caller="chat.postMessage")
            if root is None:
                return _error("thread_not_found")
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID,
                   "text": p.get("text") or "", "bot_profile": _bot_profile(BOT_ID)}
        stored = self._store(channel, message, thread_ts=root, blocks=p.get("blocks"),
                             attachments=p.get("attachments"))
        return _ok(channel=channel, ts=stored["ts"], message=self._render(channel, stored))

    def _update(self, p: dict) -> _Reply:
        channel, ts = p.get("channel"), p.get("ts")
        if not _is_channel(channel):
            return _error("channel_not_found")
        message = self._messages.get(channel, {}).get(str(ts))
        if message is None:
            return _error("message_not_found")
        if message.get("bot_id") != BOT_ID:
            return _error("cant_update_message")
        refused = self._refuse_content(f"chat.update {channel} {ts}", p)
        if refused:
            return refused
        if not any(key in p for key in ("text", "blocks", "attachments")):
            return _error("no_text")
        # Omitted fields keep their previous value; an empty blocks/attachments list removes them.
        if "text" in p:
            message["text"] = p["text"] or ""
        for key in ("blocks", "attachments"):
            if key in p:
                if p[key]:
                    message[key] = copy.deepcopy(p[key])
                else:
                    message.pop(key, None)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return _ok(channel=channel, ts=message["ts"], text=message["text"], message=self._render(channel, message))

    def _post_ephemeral(self, p: dict) -> _Reply:
        channel = p.get("channel")
        if not _is_channel(channel):
            return _error("channel_not_found")
        if not p.get("user"):
            return _missing("user")
        refused = self._refuse_content(f"chat.postEphemeral {channel}", p)
        if refused:
            return refused
        if not (p.get("text") or p.get("blocks") or p.get("attachments")):
            return _error("no_text")
        message_ts = self._next_ts()
        self._ephemerals.append({"channel": channel, "user": p["user"], "text": p.get("text"),
                                 "blocks": copy.deepcopy(p.get("blocks")), "thread_ts": p.get("thread_ts"),
                                 "attachments": copy.deepcopy(p.get("attachments")), "message_ts": message_ts})
        return _ok(message_ts=message_ts)

    def _permalink(self, p: dict) -> _Reply:
        channel, ts = p.get("channel"), p.get("message_ts")
        if not _is_channel(channel):
            return _error("channel_not_found")
        message = self._messages.get(channel, {}).get(str(ts))
        if message is None:
            return _error("message_not_found")
        permalink = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if message.get("thread_ts"):
            permalink += f"?thread_ts={message['thread_ts']}&cid={channel}"
        return _ok(channel=channel, permalink=permalink)

    def _reactions_add(self, p: dict) -> _Reply:
        channel, ts, name = p.get("channel"), p.get("timestamp"), p.get("name")
        if not channel or not ts:
            return _error("no_item_specified")
        if not name or not re.fullmatch(r"[a-z0-9_+\-':]+", str(name)):
            return _error("invalid_name")
        message = self._messages.get(channel, {}).get(str(ts))
        if message is None:
            return _error("message_not_found")
        reactions = message.setdefault("reactions", [])
        existing = next((r for r in reactions if r["name"] == name), None)
        if existing and BOT_USER_ID in existing["users"]:
            return _error("already_reacted")
        if existing is None:
            existing = {"name": name, "users": [], "count": 0}
            reactions.append(existing)
        existing["users"].append(BOT_USER_ID)
        existing["count"] += 1
        self._reactions.append({"channel": channel, "timestamp": ts, "name": name, "user": BOT_USER_ID})
        return _ok()

    def _users_info(self, p: dict) -> _Reply:
        user = p.get("user")
        if user == BOT_USER_ID:
            return _ok(user=self._user_object(BOT_USER_ID, {"name": "warroom"}, is_bot=True))
        if user not in self.users:
            return _error("user_not_found")
        return _ok(user=self._user_object(user, self.users[user]))

    def _lookup_by_email(self, p: dict) -> _Reply:
        for user_id, info in self.users.items():
            if info.get("email") and info.get("email") == p.get("email"):
                return _ok(user=self._user_object(user_id, info))
        return _error("users_not_found")

    @staticmethod
    def _user_object(user_id: str, info: dict, *, is_bot: bool = False) -> dict:
        name = info.get("name", user_id.lower())
        real_name = info.get("real_name", name)
        display_name = info.get("display_name", name)
        profile = {"real_name": real_name, "display_name": display_name, "real_name_normalized": real_name,
                   "display_name_normalized": display_name, "team": TEAM_ID}
        if info.get("email"):
            profile["email"] = info["email"]
        if is_bot:
            profile["bot_id"] = BOT_ID
        return {"id": user_id, "team_id": TEAM_ID, "name": name, "deleted": False, "real_name": real_name,
                "tz": info.get("tz", "Etc/UTC"), "is_admin": False, "is_bot": is_bot, "is_app_user": False,
                "profile": profile}

    def _replies(self, p: dict) -> _Reply:
        channel, ts = p.get("channel"), p.get("ts")
        if not _is_channel(channel):
            return _error("channel_not_found")
        if not ts:
            return _missing("ts")
        root = self._thread_root(channel, str(ts))
        if root is None:
            return _error("thread_not_found")
        messages = [self._render(channel, m) for m in self._thread_messages(channel, root)]
        return _ok(messages=messages, has_more=False)

    def _conversation_info(self, p: dict) -> _Reply:
        channel = p.get("channel")
        if not _is_channel(channel):
            return _error("channel_not_found")
        kind = channel[0]
        info = {"id": channel, "name": channel.lower(), "is_channel": kind == "C", "is_group": kind == "G",
                "is_im": kind == "D", "is_private": kind != "C", "is_archived": False, "is_member": True,
                "created": 1700000000, "context_team_id": TEAM_ID, "name_normalized": channel.lower(),
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0}}
        if kind == "D":
            info = {"id": channel, "is_im": True, "is_private": True, "is_archived": False,
                    "created": 1700000000, "user": next(iter(self.users), "U0ALICE")}
        return _ok(channel=info)

    # ---- message store ---------------------------------------------------------------------------

    def _next_ts(self) -> str:
        self._ts_micros += 100
        return f"{self._ts_micros // 1_000_000}.{self._ts_micros % 1_000_000:06d}"

    def _store(self, channel: str, message: dict, *, thread_ts: str | None, blocks: list | None,
               attachments: list | None, ts: str | None = None) -> dict:
        if ts is None:
            ts = self._next_ts()
        else:
            self._ts_micros = max(self._ts_micros, int(_ts_key(ts) * 1_000_000))
        stored = {k: v for k, v in message.items() if v is not None}
        stored["ts"] = ts
        stored["team"] = TEAM_ID
        if blocks:
            stored["blocks"] = copy.deepcopy(blocks)
        if attachments:
            stored["attachments"] = copy.deepcopy(attachments)
        if thread_ts:
            stored["thread_ts"] = thread_ts
        self._messages.setdefault(channel, {})[ts] = stored
        return stored

    def _thread_root(self, channel: str, ts: str, *, caller: str | None = None) -> str | None:
        """The ts of the thread's parent; a reply's ts is accepted as Slack does, but it is a mistake."""
        message = self._messages.get(channel, {}).get(ts)
        if message is None:
            return None
        root = message.get("thread_ts", ts)
        if caller and root != ts:
            self._violation(f"{caller} {channel}: thread_ts {ts} is a reply; use its parent {root}")
        return root

    def _thread_messages(self, channel: str, root: str) -> list[dict]:
        stored = self._messages.get(channel, {})
        thread = [m for m in stored.values() if m["ts"] == root or m.get("thread_ts") == root]
        return sorted(thread, key=lambda m: _ts_key(m["ts"]))

    def _render(self, channel: str, message: dict) -> dict:
        """A stored message as the API shows it: parents carry reply counts, replies their parent's user."""
        shown = copy.deepcopy(message)
        stored = self._messages.get(channel, {})
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            parent = stored.get(message["thread_ts"], {})
            if parent.get("user"):
                shown["parent_user_id"] = parent["user"]
            return shown
        replies = [m for m in self._thread_messages(channel, message["ts"]) if m["ts"] != message["ts"]]
        if replies:
            users = list(dict.fromkeys(m.get("user") or m.get("bot_id") for m in replies))
            shown.update(thread_ts=message["ts"], reply_count=len(replies), reply_users_count=len(users),
                         latest_reply=replies[-1]["ts"], reply_users=users)
        return shown

    # ---- response_url ----------------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        with self._lock:
            status, text = self._respond(name, raw, request.content_type)
        return web.Response(text=text, status=status, content_type="text/plain")

    def _respond(self, name: str, raw: bytes, content_type: str) -> tuple[int, str]:
        where = f"response_url {name}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if content_type != JSON or not isinstance(body, dict):
            self._violation(f"{where}: body is not a JSON object (Content-Type {content_type})")
            return 400, "invalid_payload"
        uses = self._response_names.count(name) + 1
        if uses > RESPONSE_URL_USES:
            self._violation(f"{where}: used {uses} times > {RESPONSE_URL_USES}")
        problem = self._content_problem(where, body)
        if problem:
            for reason in problem[1]:
                self._violation(f"{where}: {reason}")
            return 400, problem[0]
        if not (body.get("text") or body.get("blocks") or body.get("attachments") or body.get("delete_original")):
            self._violation(f"{where}: no text, blocks or attachments")
            return 400, "no_text"
        self._responses.append(copy.deepcopy(body))
        self._response_names.append(name)
        self._apply_response(name, body)
        return 200, "ok"

    def _apply_response(self, name: str, body: dict) -> None:
        channel, message_ts = self._response_bindings.get(name, (None, None))
        if channel is None:
            return
        message = self._messages.get(channel, {}).get(message_ts or "")
        if body.get("delete_original") and message is not None:
            del self._messages[channel][message_ts]
        elif body.get("replace_original") and message is not None:
            message["text"] = body.get("text") or ""
            for key in ("blocks", "attachments"):
                if body.get(key):
                    message[key] = copy.deepcopy(body[key])
                else:
                    message.pop(key, None)
        elif body.get("response_type") == "in_channel":
            root = self._thread_root(channel, str(body["thread_ts"])) if body.get("thread_ts") else None
            message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID,
                       "text": body.get("text") or "", "bot_profile": _bot_profile(BOT_ID)}
            self._store(channel, message, thread_ts=root, blocks=body.get("blocks"),
                        attachments=body.get("attachments"))

    # ---- Socket Mode -----------------------------------------------------------------------------

    async def _socket_endpoint(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket")
        with self._lock:
            known = ticket in self._tickets
            if not known:
                self._violation(f"socket: connection with unknown ticket {ticket!r} (call apps.connections.open)")
        if not known:
            return web.Response(status=401, text="invalid ticket")
        # autoping answers the client's "sdk-ping-pong:<time>" pings with matching pongs, as Slack does.
        ws = web.WebSocketResponse(autoping=True, timeout=1.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        self._socket = ws
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "debug_info": {"host": "standin", "approximate_connection_time": 18060},
                            "connection_info": {"app_id": APP_ID}})
        self.socket_connections += 1
        self.socket_connected.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_socket_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    self._socket_violation("socket: binary frame received; Slack expects JSON text frames")
        finally:
            self._sockets.discard(ws)
            if self._socket is ws:
                self._socket = None
                self.socket_connected.clear()
        return ws

    def _socket_violation(self, message: str) -> None:
        with self._lock:
            self._violation(message)

    def _on_socket_text(self, data: str) -> None:
        try:
            ack = json.loads(data)
        except ValueError:
            return self._socket_violation(f"socket: frame is not JSON: {_clip(data, 60)}")
        envelope_id = ack.get("envelope_id") if isinstance(ack, dict) else None
        sent = self._sent_envelopes.get(envelope_id) if envelope_id else None
        if sent is None:
            return self._socket_violation(f"socket: ack for unknown envelope {envelope_id!r}: {_clip(data, 80)}")
        if sent["acked"]:
            return self._socket_violation(f"socket: envelope {envelope_id} acked twice")
        sent["acked"] = True
        latency = time.monotonic() - sent["sent_at"]
        with self._lock:
            self._socket_acks.append({**ack, "latency": latency})
            if latency > SOCKET_ACK_DEADLINE:
                self._violation(f"socket: envelope {envelope_id} acked after {latency:.1f}s > {SOCKET_ACK_DEADLINE:g}s")
        if not sent["waiter"].done():
            sent["waiter"].set_result(ack)

    def socket_send(self, envelope: dict, timeout: float = 10) -> dict | None:
        """Send an envelope to the connected Socket Mode client (waiting up to `timeout` for one to
        connect) and return its ack, or None (and a violation) if none came within `timeout`.
        Blocking: from an async test, use `await socket_send_async(...)`."""
        future = asyncio.run_coroutine_threadsafe(self._socket_send(envelope, timeout), self._loop)
        return future.result(2 * timeout + 5)

    async def socket_send_async(self, envelope: dict, timeout: float = 10) -> dict | None:
        future = asyncio.run_coroutine_threadsafe(self._socket_send(envelope, timeout), self._loop)
        return await asyncio.wrap_future(future)

    async def _socket_send(self, envelope: dict, timeout: float) -> dict | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._socket is None or self._socket.closed:
            if loop.time() >= deadline:
                raise AssertionError(f"no Socket Mode client connected within {timeout:g}s")
            await asyncio.sleep(0.05)
        envelope = {"envelope_id": str(uuid.uuid4()), **envelope}
        waiter = loop.create_future()
        self._sent_envelopes[envelope["envelope_id"]] = {"waiter": waiter, "sent_at": time.monotonic(),
                                                         "acked": False}
        await self._socket.send_str(json.dumps(envelope))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.1, deadline - loop.time()))
        except asyncio.TimeoutError:
            # Slack would retry the envelope (events) or show the user a timeout (commands, actions).
            self._socket_violation(f"socket: envelope {envelope['envelope_id']} ({envelope.get('type')}) "
                                   f"was not acked within {timeout:g}s")
            return None

    def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours ("refresh_requested")."""
        async def send() -> None:
            if self._socket is not None and not self._socket.closed:
                await self._socket.send_json({"type": "disconnect", "reason": reason,
                                              "debug_info": {"host": "standin"}})
        asyncio.run_coroutine_threadsafe(send(), self._loop).result(5)


def _injected(status: int, error: str | None) -> _Reply:
    if status == 200:
        return _error(error or "internal_error")
    if error:
        return _Reply({"ok": False, "error": error}, status=status)
    return _Reply(f"<html><body><h1>{status}</h1>Slack stand-in: injected failure</body></html>", status=status)


async def _read_params(request: web.Request) -> tuple[dict, str | None]:
    """Query string, then a JSON or form body, merged; JSON-typed fields of forms decoded."""
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        content_type = request.content_type
        if content_type == JSON:
            try:
                body = json.loads(await request.text())
            except ValueError:
                return params, "invalid_json"
            if not isinstance(body, dict):
                return params, "json_not_object"
            params.update(body)
        elif content_type in (FORM, "multipart/form-data"):
            form = await request.post()
            params.update({k: v if isinstance(v, str) else "<file>" for k, v in form.items()})
        elif await request.read():
            return params, "invalid_form_data"
    # Forms and query strings carry arrays as JSON strings; left as a string if unparseable, so
    # that the block check reports it as invalid_blocks_format the way Slack does.
    for key in ("blocks", "attachments", "metadata"):
        if isinstance(params.get(key), str):
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                pass
    return params, None


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer "):].strip() if header.startswith("Bearer ") else None


def _bot_profile(bot_id: str) -> dict:
    ours = bot_id == BOT_ID
    return {"id": bot_id, "deleted": False, "name": "warroom" if ours else "other-app",
            "updated": 1700000000, "app_id": APP_ID if ours else "A0OTHERAPP", "team_id": TEAM_ID,
            "icons": {"image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png"}}


# --------------------------------------------------------------------------------------------------
# Inbound: signing and payload builders


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack adds to every HTTP request it sends an app (docs: verifying requests from Slack)."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def signed_headers(secret: str, body: bytes | str, content_type: str, timestamp: int | None = None) -> dict[str, str]:
    return {"Content-Type": content_type, **sign(secret, body, timestamp)}


_counter = itertools.count(1)
_last_event_micros = 0
_event_ts_lock = threading.Lock()


@functools.cache
def _load_template(name: str) -> Any:
    path = PAYLOADS / name
    return path.read_text().strip() if name.endswith(".txt") else json.loads(path.read_text())


def _template(name: str) -> Any:
    return copy.deepcopy(_load_template(name))


def _event_ts() -> str:
    """A fresh, strictly increasing Slack ts based on the wall clock."""
    global _last_event_micros
    with _event_ts_lock:
        _last_event_micros = max(_last_event_micros + 100, int(time.time() * 1_000_000))
        return f"{_last_event_micros // 1_000_000}.{_last_event_micros % 1_000_000:06d}"


def _trigger_id() -> str:
    return f"{next(_counter)}.{int(time.time())}.{uuid.uuid4().hex}"


def _channel_name(channel: str) -> str:
    return {"D": "directmessage", "G": "privategroup"}.get(channel[:1], channel.lower())


def _hook(kind: str, team: str) -> str:
    return f"https://hooks.slack.com/{kind}/{team}/{next(_counter)}/{uuid.uuid4().hex[:24]}"


def slash_command(text: str, *, channel: str = "C0INCIDENT", user: str = "U0ALICE", command: str = "/warroom",
                  response_url: str | None = None, team: str = TEAM_ID, user_name: str | None = None,
                  trigger_id: str | None = None) -> tuple[bytes, str]:
    """A slash command as Slack POSTs it: a form body (Slack signs these exact bytes)."""
    fields = dict(parse_qsl(_template("test_slash_command__slash_command_body.form-urlencoded.txt"),
                            keep_blank_values=True))
    # The template comes from an Enterprise Grid org; ours is a plain workspace.
    fields.pop("enterprise_id", None)
    fields.pop("enterprise_name", None)
    fields.update(team_id=team, team_domain=TEAM_DOMAIN, channel_id=channel, channel_name=_channel_name(channel),
                  user_id=user, user_name=user_name or user.lower(), command=command, text=text,
                  response_url=response_url or _hook("commands", team), trigger_id=trigger_id or _trigger_id(),
                  api_app_id=APP_ID, is_enterprise_install="false")
    return urlencode(fields).encode(), FORM


def _find_button(blocks: list, action_id: str, value: str | None) -> tuple[str | None, dict] | None:
    for block in blocks or []:
        elements = list(block.get("elements") or []) + ([block["accessory"]] if block.get("accessory") else [])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id and \
                    (value is None or element.get("value") in (None, value)):
                return block.get("block_id"), element
    return None


def block_action(action_id: str, value: str, *, channel: str, message_ts: str, user: str = "U0ALICE",
                 response_url: str | None = None, thread_ts: str | None = None, team: str = TEAM_ID,
                 message: dict | None = None, block_id: str | None = None,
                 user_name: str | None = None) -> tuple[bytes, str]:
    """A button click in a message, as Slack POSTs it: `payload=<json>` form-encoded. Pass the clicked
    `message` (e.g. from `standin.messages(channel)`) to carry its blocks, block_id and button text."""
    payload = _template("test_block_actions__body.json")
    name = user_name or user.lower()
    clicked = copy.deepcopy(message) if message else {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID,
                                                       "text": "", "team": team}
    clicked["ts"] = message_ts
    if thread_ts:
        clicked["thread_ts"] = thread_ts
    container = {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False}
    if thread_ts:
        container["thread_ts"] = thread_ts
    payload.update(user={"id": user, "username": name, "name": name, "team_id": team}, api_app_id=APP_ID,
                   container=container, trigger_id=_trigger_id(), team={"id": team, "domain": TEAM_DOMAIN},
                   enterprise=None, is_enterprise_install=False,
                   channel={"id": channel, "name": _channel_name(channel)}, message=clicked,
                   state={"values": {}}, response_url=response_url or _hook("actions", team))
    action = payload["actions"][0]
    found = _find_button(clicked.get("blocks", []), action_id, value)
    if found:
        action["block_id"], action["text"] = found[0] or action["block_id"], copy.deepcopy(found[1]["text"])
    action.update(action_id=action_id, value=value, action_ts=_event_ts())
    if block_id:
        action["block_id"] = block_id
    return urlencode({"payload": json.dumps(payload)}).encode(), FORM


def event(event: dict, *, event_id: str | None = None, team: str = TEAM_ID) -> tuple[bytes, str]:
    """An Events API `event_callback` envelope as Slack POSTs it (JSON)."""
    envelope = _template("test_events__valid_event_body.json")
    envelope.pop("enterprise_id", None)
    envelope.pop("authed_users", None)   # deprecated; `authorizations` replaced it
    envelope.update(team_id=team, api_app_id=APP_ID, event=event,
                    event_id=event_id or f"Ev{next(_counter):04d}{uuid.uuid4().hex[:6].upper()}",
                    event_time=int(time.time()),
                    authorizations=[{"enterprise_id": None, "team_id": team, "user_id": BOT_USER_ID,
                                     "is_bot": True, "is_enterprise_install": False}],
                    is_ext_shared_channel=False, event_context=f"4-{uuid.uuid4().hex}")
    return json.dumps(envelope).encode(), JSON


def _rich_text(text: str) -> list[dict]:
    """The rich_text block Slack's clients attach to what people type (mentions become user elements)."""
    elements: list[dict] = []
    for i, part in enumerate(re.split(r"<@([UW][A-Z0-9]+)>", text)):
        if i % 2:
            elements.append({"type": "user", "user_id": part})
        elif part:
            elements.append({"type": "text", "text": part})
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:4],
             "elements": [{"type": "rich_text_section", "elements": elements}]}]


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def message_event(channel: str, text: str, *, user: str | None = None, bot_id: str | None = None,
                  subtype: str | None = None, ts: str | None = None, thread_ts: str | None = None,
                  attachments: list | None = None, blocks: list | None = None, team: str = TEAM_ID) -> dict:
    """The inner `message` event. A person's message (user, no bot_id) gets a client_msg_id and the
    rich_text blocks Slack's clients send; an app's message carries bot_id and bot_profile (and a
    classic bot's subtype "bot_message" has no user)."""
    ts = ts or _event_ts()
    if bot_id:
        shape = _template("test_message_bot__bot_message_event_payload.json")["event"]
        shape["bot_profile"] = _bot_profile(bot_id)
        shape.pop("user", None)
        fields = {"bot_id": bot_id}
    else:
        shape = _template("test_message__message_body.json")["event"]
        fields = {"client_msg_id": str(uuid.uuid4())}
        shape["blocks"] = blocks if blocks is not None else _rich_text(text)
    shape.update(fields, type="message", text=text, ts=ts, team=team, channel=channel, event_ts=ts,
                 channel_type=_channel_type(channel))
    if user:
        shape["user"] = user
    if subtype:
        shape["subtype"] = subtype
    if thread_ts:
        shape["thread_ts"] = thread_ts
    if attachments is not None:
        shape["attachments"] = attachments
    if blocks is not None:
        shape["blocks"] = blocks
    if user is None and not bot_id:
        shape.pop("user", None)
    return shape


def app_mention_event(channel: str, text: str, *, user: str, ts: str | None = None, thread_ts: str | None = None,
                      team: str = TEAM_ID) -> dict:
    """The inner `app_mention` event; `text` should contain the mention, e.g. "<@U0WARROOM> help"."""
    ts = ts or _event_ts()
    shape = _template("test_events__valid_event_body.json")["event"]
    shape.update(client_msg_id=str(uuid.uuid4()), type="app_mention", text=text, user=user, ts=ts, team=team,
                 blocks=_rich_text(text), channel=channel, event_ts=ts)
    if thread_ts:
        shape["thread_ts"] = thread_ts
    return shape


def socket_envelope(body: bytes, content_type: str, *, envelope_id: str | None = None) -> dict:
    """The Socket Mode envelope Slack would send instead of POSTing `body` (from the builders above)."""
    envelope_id = envelope_id or str(uuid.uuid4())
    if content_type.startswith(JSON):
        return {"envelope_id": envelope_id, "payload": json.loads(body), "type": "events_api",
                "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": ""}
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    if "payload" in fields:
        payload = json.loads(fields["payload"])
        return {"envelope_id": envelope_id, "payload": payload, "type": "interactive",
                "accepts_response_payload": payload.get("type") in ("view_submission", "block_suggestion")}
    return {"envelope_id": envelope_id, "payload": fields, "type": "slash_commands", "accepts_response_payload": True}
