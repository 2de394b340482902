"""The connector protocol and its result type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.connector_params import validate_params


class ConnectorError(Exception):
    """The step could not run as asked (bad parameters, refused target); never retried."""


class TransientError(Exception):
    """A failure worth retrying: the action certainly did not start (connection refused, 5xx on a read)."""


@dataclass
class StepResult:
    ok: bool
    summary: str
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Connector(Protocol):
    name: str

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        """Run one step; raise ConnectorError for bad input, TransientError for retryable failures.
        `read_only` is the step's declared risk: a connector that can enforce it (a read-only SQL
        transaction, no writing Kubernetes verbs) does."""

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        """One line saying exactly what `run` would do, without doing any I/O (dry runs)."""


def checked(connector: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The step's parameters validated against the connector's schema, or ConnectorError saying what is wrong."""
    try:
        return validate_params(connector, params)
    except ValueError as exc:
        raise ConnectorError(str(exc)) from None


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [truncated: {len(text) - limit} more characters]"
