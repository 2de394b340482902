"""An OpenAI-compatible `/v1/chat/completions` server (what llama.cpp's server speaks), on loopback.

Scripted like the Anthropic stand-in: `api.script(answer({...}), error(503, ...))`; every request is
recorded. `response_format: json_schema` requests get the scripted object as the message content."""
from __future__ import annotations

import itertools
import json
import time
from typing import Any

from tests.anthropic_standin import Reply, StandIn

_ids = itertools.count(1)


def answer(data: Any, *, raw: str | None = None) -> Reply:
    """A 200 whose message content is `data` as JSON (or `raw` text verbatim)."""
    return Reply(body={"content": raw if raw is not None else json.dumps(data)})


def error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "server_error", "code": status}},
                 headers=headers)


class OpenAIStandIn(StandIn):
    def route(self, path, body):
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}, {}, 0.0
        if "model" not in body or not body.get("messages"):
            return 400, {"error": {"message": "model and messages are required", "type": "invalid_request_error"}}, \
                {}, 0.0
        reply = self.next_reply() or answer({})
        if reply.status != 200:
            return reply.status, reply.body, reply.headers, reply.delay_s
        prompt = sum(len(m.get("content") or "") for m in body["messages"]) // 4
        completion = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
                      "model": body["model"],
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": reply.body["content"]}}],
                      "usage": {"prompt_tokens": prompt, "completion_tokens": 64, "total_tokens": prompt + 64,
                                "prompt_tokens_details": {"cached_tokens": 0}}}
        return 200, completion, {}, reply.delay_s
