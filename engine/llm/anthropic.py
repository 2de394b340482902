"""Anthropic's Messages API through the official AsyncAnthropic client.

Typed output is a forced tool call whose input_schema is the output's JSON schema; the system prompt and
the stable context blocks carry `cache_control`, so repeated alerts of one kind reuse the cached prefix.
The client's own retries are off: the guard retries, so every attempt is bounded and counted."""
from __future__ import annotations

from typing import Any

import anthropic

from engine.llm.base import Completion, ModelError, ModelOutputError, Request, Usage, classify_status, \
    retry_after_seconds
from engine.llm.loop import LoopThread

CACHED = {"type": "ephemeral"}


class AnthropicLLM:
    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, base_url: str | None = None) -> None:
        self.model = model
        self._api_key = api_key
        self._base_url = base_url
        self._loop = LoopThread("warroom-anthropic")
        self._client: anthropic.AsyncAnthropic | None = None

    def complete(self, request: Request, *, timeout: float) -> Completion:
        try:
            # A little slack over the client's own timeout, so its precise error wins the race.
            message = self._loop.run(self._create(request, timeout), timeout + 0.5)
        except anthropic.APIStatusError as exc:
            outcome, retryable = classify_status(exc.status_code)
            kind = getattr(exc, "type", None) or outcome  # error.type from the body, e.g. overloaded_error
            raise ModelError(f"anthropic answered {exc.status_code} {kind}", outcome=outcome, retryable=retryable,
                             retry_after=retry_after_seconds(exc.response.headers)) from None
        except anthropic.APITimeoutError:
            raise ModelError(f"anthropic did not answer within {timeout:.1f}s", outcome="timeout",
                             retryable=True) from None
        except anthropic.APIConnectionError as exc:
            raise ModelError(f"cannot reach anthropic: {type(exc.__cause__ or exc).__name__}",
                             outcome="connection_error", retryable=True) from None
        except TimeoutError:
            raise ModelError(f"anthropic did not answer within {timeout:.1f}s", outcome="timeout",
                             retryable=True) from None
        usage = _usage(message.usage)
        for block in message.content:
            if block.type == "tool_use" and block.name == request.tool.name:
                if not isinstance(block.input, dict):
                    raise ModelOutputError(f"tool input is {type(block.input).__name__}, not an object", usage=usage)
                return Completion(data=block.input, usage=usage)
        raise ModelOutputError(f"no {request.tool.name} tool call in the answer (stop_reason={message.stop_reason})",
                               usage=usage)

    async def _create(self, request: Request, timeout: float):
        if self._client is None:  # made on the private loop, where its connections will live
            self._client = anthropic.AsyncAnthropic(api_key=self._api_key, base_url=self._base_url, max_retries=0,
                                                    timeout=timeout)
        return await self._client.messages.create(
            model=self.model, max_tokens=request.max_tokens, timeout=timeout,
            system=[{"type": "text", "text": request.system, "cache_control": CACHED}],
            messages=[{"role": "user", "content": user_content(request)}],
            tools=[{"name": request.tool.name, "description": request.tool.description,
                    "input_schema": request.tool.input_schema}],
            tool_choice={"type": "tool", "name": request.tool.name, "disable_parallel_tool_use": True})

    def close(self) -> None:
        if self._client is not None:
            try:
                self._loop.run(self._client.close(), timeout=2)
            except Exception:  # closing is best effort: the process is going away
                pass
        self._loop.close()


def user_content(request: Request) -> list[dict[str, Any]]:
    """Stable blocks first, the last of them marked as the end of the cacheable prefix; then this alert."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text} for text in request.stable]
    if blocks:
        blocks[-1]["cache_control"] = CACHED
    blocks.append({"type": "text", "text": request.volatile})
    return blocks


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0,
                 cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
                 cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0)
