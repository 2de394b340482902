"""The connector protocol and its result type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ConnectorError(Exception):
    """The step could not run as asked (bad parameters, refused target); never retried."""


class TransientError(Exception):
    """A failure worth retrying (connection refused, timeout, 5xx)."""


@dataclass
class StepResult:
    ok: bool
    summary: str
    output: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Connector(Protocol):
    name: str

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float) -> StepResult:
        """Run one step; raise ConnectorError for bad input, TransientError for retryable failures."""
