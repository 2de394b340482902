"""LLM providers behind one small protocol. Providers only propose; engine code scores and decides."""
from __future__ import annotations

from typing import Protocol

from engine.context import Context
from engine.models import Evidence, Frozen


class Candidate(Frozen):
    """A proposed cause, before deterministic scoring."""

    title: str
    cause: str
    evidence: list[Evidence]


class Provider(Protocol):
    name: str

    def hypotheses(self, context: Context) -> list[Candidate]:
        """Propose candidate causes from the assembled context."""


def make_provider(name: str) -> Provider:
    """The provider named by settings; unknown names fail loudly at start-up."""
    if name == "offline":
        from engine.llm.offline import OfflineProvider

        return OfflineProvider()
    from engine.config import ConfigError

    raise ConfigError(f"LLM provider {name!r} is not available in this build (use WARROOM_LLM=offline)")
