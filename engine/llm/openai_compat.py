"""Any OpenAI-compatible chat completions server (a local llama.cpp, vLLM, Ollama, or OpenAI itself).

Typed output through `response_format: json_schema`, which these servers turn into constrained decoding;
the JSON is validated against the same pydantic model as Anthropic's tool input."""
from __future__ import annotations

import json
from typing import Any

import openai

from engine.llm.base import Completion, ModelError, ModelOutputError, Request, Usage, classify_status, \
    retry_after_seconds


class OpenAICompatLLM:
    name = "openai"

    def __init__(self, *, base_url: str | None, api_key: str | None, model: str) -> None:
        self.model = model
        # Local servers need no key, but the client insists on one.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)

    def complete(self, request: Request, *, timeout: float) -> Completion:
        try:
            response = self._client.chat.completions.create(
                model=self.model, max_tokens=request.max_tokens, timeout=timeout, temperature=0,
                messages=[{"role": "system", "content": request.system},
                          {"role": "user", "content": "\n\n".join([*request.stable, request.volatile])}],
                response_format={"type": "json_schema", "json_schema": {
                    "name": request.tool.name, "description": request.tool.description,
                    "schema": request.tool.input_schema}})
        except openai.APIStatusError as exc:
            outcome, retryable = classify_status(exc.status_code)
            raise ModelError(f"{self.name} server answered {exc.status_code}", outcome=outcome, retryable=retryable,
                             retry_after=retry_after_seconds(exc.response.headers)) from None
        except openai.APITimeoutError:
            raise ModelError(f"{self.name} server did not answer within {timeout:.1f}s", outcome="timeout",
                             retryable=True) from None
        except openai.APIConnectionError as exc:
            raise ModelError(f"cannot reach the {self.name} server: {type(exc.__cause__ or exc).__name__}",
                             outcome="connection_error", retryable=True) from None
        usage = _usage(response.usage)
        if not response.choices:
            raise ModelOutputError("the answer has no choices", usage=usage)
        text = response.choices[0].message.content or ""
        try:
            data = json.loads(_strip_fence(text))
        except json.JSONDecodeError as exc:
            raise ModelOutputError(f"the answer is not JSON ({exc.msg})", usage=usage) from None
        if not isinstance(data, dict):
            raise ModelOutputError(f"the answer is a JSON {type(data).__name__}, not an object", usage=usage)
        return Completion(data=data, usage=usage)

    def close(self) -> None:
        self._client.close()


def _strip_fence(text: str) -> str:
    """Servers without constrained decoding often wrap JSON in a ```json fence."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
    return Usage(input_tokens=usage.prompt_tokens or 0, output_tokens=usage.completion_tokens or 0,
                 cache_read_tokens=cached)
