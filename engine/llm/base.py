"""What every model backend speaks: one structured request in, one validated JSON object out, our own errors.

A backend (`LLM`) knows its vendor's wire format and nothing else; prompts, retries, the breaker and
the offline fallback live above it, so they are written once."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    """The typed output asked for: a tool the model is forced to call, its input schema the output's."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """A prompt split by how often it changes, so a backend can cache the stable prefix.

    `stable` blocks (runbooks, precedents) repeat across alerts of the same kind; `volatile` is this
    alert. Everything here has already been redacted."""

    system: str
    stable: list[str]
    volatile: str
    tool: ToolSpec
    max_tokens: int = 2048


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    data: dict[str, Any]           # the tool input / JSON object, not yet validated against the model
    usage: Usage = field(default_factory=Usage)


class ModelError(Exception):
    """The backend did not answer. `retryable`: worth another attempt (429, 529, 5xx, timeouts, resets)."""

    def __init__(self, message: str, *, outcome: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome          # metrics label: rate_limited, overloaded, server_error, timeout, ...
        self.retryable = retryable
        self.retry_after = retry_after


class ModelOutputError(Exception):
    """The backend answered, but not with what the schema asks for."""

    outcome = "invalid_output"

    def __init__(self, message: str, *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage  # tokens were spent all the same


class CircuitOpen(Exception):
    """The breaker is open: the model is not asked at all."""

    outcome = "circuit_open"


class LLM(Protocol):
    name: str

    def complete(self, request: Request, *, timeout: float) -> Completion:
        """One attempt, no retries; raises ModelError or ModelOutputError."""


class LLMRecorder(Protocol):
    """Where calls are reported (bot.metrics.Metrics in the bot); keeps engine/ free of prometheus."""

    def llm_call(self, provider: str, outcome: str, latency_s: float, usage: Usage | None) -> None: ...

    def llm_breaker(self, provider: str, state: str) -> None: ...

    def llm_fallback(self, provider: str, reason: str) -> None: ...


class NullRecorder:
    def llm_call(self, provider: str, outcome: str, latency_s: float, usage: Usage | None) -> None:
        pass

    def llm_breaker(self, provider: str, state: str) -> None:
        pass

    def llm_fallback(self, provider: str, reason: str) -> None:
        pass


def retry_after_seconds(headers: Any) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds) from response headers; dates are ignored (rare here)."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


def classify_status(status: int) -> tuple[str, bool]:
    """(metrics outcome, retryable) for an HTTP error status."""
    if status == 429:
        return "rate_limited", True
    if status == 529:
        return "overloaded", True
    if status == 408:
        return "timeout", True
    if status >= 500:
        return "server_error", True
    return "client_error", False
