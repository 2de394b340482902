"""Anthropic's Messages API, stood in for on loopback: the real `anthropic` client talks to it over HTTP.

`POST /v1/messages` answers like the real API (a `message` with a `tool_use` block, `stop_reason`,
`usage` with the cache fields; `{"type": "error", "error": {...}}` bodies with 429 / 529 / 5xx), checks
the request the way the API does where it matters here (required fields, tool_choice naming a given tool,
cache_control types), and records every request. Tests script what comes next:

    api.script(tool({"hypotheses": [...]}), overloaded(), hang(10))

and anything unscripted gets `api.default` (a valid empty-ish tool call unless set)."""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None                       # dict -> JSON; callable(request_body) -> dict
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0                   # sleep before answering (a hang when longer than the client waits)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str
    at: float


class StandIn:
    """An HTTP server on 127.0.0.1 (ephemeral port) answering from a script; subclasses define `route`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.default: Reply | None = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API

            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body = json.loads(raw or "{}")
                except json.JSONDecodeError:
                    body = {}
                standin._record(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw,
                                         time.monotonic()))
                status, payload, headers, delay = standin.route(self.path, body)
                if delay and standin._release.wait(delay):
                    return  # the stand-in is closing: drop the connection
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def _record(self, recorded: Recorded) -> None:
        with self._lock:
            self.requests.append(recorded)

    def next_reply(self) -> Reply | None:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def route(self, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str], float]:
        raise NotImplementedError


# --- the Messages API ----------------------------------------------------------------------------

_ids = itertools.count(1)


def tool(tool_input: Any, *, usage: dict[str, int] | None = None) -> Reply:
    """A 200 whose content is one tool_use block calling the forced tool with `tool_input`."""
    return Reply(body={"tool_input": tool_input, "usage": usage})


def text_only(text: str) -> Reply:
    """A 200 with a text block and no tool call (what a model ignoring tool_choice would send)."""
    return Reply(body={"text": text})


def error(status: int, kind: str, message: str, **headers: str) -> Reply:
    return Reply(status=status, body={"type": "error", "error": {"type": kind, "message": message}},
                 headers=headers)


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded")


def rate_limited(retry_after: float) -> Reply:
    return error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
                 **{"retry-after": str(retry_after)})


def hang(seconds: float) -> Reply:
    return Reply(delay_s=seconds, body={"tool_input": {}})


class AnthropicStandIn(StandIn):
    """Also simulates prompt caching: a prefix (tools, system, blocks up to the last cache_control) seen
    before is reported as cache_read_input_tokens, a new one as cache_creation_input_tokens."""

    def __init__(self) -> None:
        super().__init__()
        self._cached: set[str] = set()

    def messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == "/v1/messages"]

    def route(self, path, body):
        if path != "/v1/messages":
            return 404, _error("not_found_error", f"no route {path}"), {}, 0.0
        problem = _invalid(body)
        if problem:
            return 400, _error("invalid_request_error", problem), {}, 0.0
        reply = self.next_reply() or tool({"hypotheses": []})
        if reply.status != 200:
            return reply.status, reply.body, reply.headers, reply.delay_s
        spec = reply.body(body) if callable(reply.body) else reply.body
        if "text" in spec:
            content = [{"type": "text", "text": spec["text"]}]
            stop = "end_turn"
        else:
            content = [{"type": "tool_use", "id": f"toolu_{next(_ids):08d}", "name": body["tool_choice"]["name"],
                        "input": spec["tool_input"]}]
            stop = "tool_use"
        message = {"id": f"msg_{next(_ids):08d}", "type": "message", "role": "assistant", "model": body["model"],
                   "content": content, "stop_reason": stop, "stop_sequence": None,
                   "usage": spec.get("usage") or self._usage(body)}
        return 200, message, {"request-id": f"req_{next(_ids):08d}"}, reply.delay_s

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        prefix, rest = _split_cached(body)
        cached_tokens = _tokens(prefix)
        key = hashlib.sha256(prefix.encode()).hexdigest()
        hit = bool(prefix) and key in self._cached
        if prefix:
            self._cached.add(key)
        return {"input_tokens": _tokens(rest), "output_tokens": 87,
                "cache_read_input_tokens": cached_tokens if hit else 0,
                "cache_creation_input_tokens": 0 if hit else cached_tokens}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _invalid(body: dict[str, Any]) -> str | None:
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return f"{key}: Field required"
    tools = {t.get("name"): t for t in body.get("tools", [])}
    for t in tools.values():
        if (t.get("input_schema") or {}).get("type") != "object":
            return "tools.0.input_schema.type: Input should be 'object'"
    choice = body.get("tool_choice")
    if choice and choice.get("type") == "tool" and choice.get("name") not in tools:
        return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    for block in _blocks(body):
        control = block.get("cache_control")
        if control is not None and control.get("type") != "ephemeral":
            return "cache_control.type: Input should be 'ephemeral'"
    if sum(1 for b in _blocks(body) if b.get("cache_control")) > 4:
        return "A maximum of 4 blocks with cache_control may be provided"
    return None


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    system = body.get("system")
    blocks = list(system) if isinstance(system, list) else []
    for message in body.get("messages", []):
        if isinstance(message.get("content"), list):
            blocks.extend(message["content"])
    return blocks


def _split_cached(body: dict[str, Any]) -> tuple[str, str]:
    """(text up to and including the last cache_control block, the rest): what caching would cover."""
    parts = [json.dumps(body.get("tools", []), sort_keys=True)]
    last = -1
    blocks = _blocks(body)
    for i, block in enumerate(blocks):
        parts.append(block.get("text", ""))
        if block.get("cache_control"):
            last = i
    if last < 0:
        return "", "".join(parts)
    return "".join(parts[: last + 2]), "".join(parts[last + 2:])


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def forced_tool(request_body: dict[str, Any]) -> dict[str, Any]:
    """The tool a request forces, by its tool_choice."""
    name = request_body["tool_choice"]["name"]
    return next(t for t in request_body["tools"] if t["name"] == name)

