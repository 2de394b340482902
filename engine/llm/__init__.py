"""LLM providers behind one small protocol. Providers only propose; engine code scores and decides."""
from __future__ import annotations

from typing import Any, Protocol

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


class LLMSettings(Protocol):
    """The settings make_provider reads (bot.settings.Settings has them; engine/ does not import bot/)."""

    llm_provider: str
    anthropic_api_key: Any
    anthropic_base_url: str | None
    anthropic_model: str
    openai_base_url: str | None
    openai_api_key: Any
    openai_model: str


def make_provider(choice: "str | LLMSettings", *, recorder: Any = None, policy: Any = None) -> Provider:
    """The provider settings name: a model provider guarded and falling back to offline, or offline itself.

    A misconfiguration (unknown name, a model provider without what it needs) fails loudly at start-up."""
    from engine.config import ConfigError
    from engine.llm.offline import OfflineProvider

    name = choice if isinstance(choice, str) else choice.llm_provider
    if name == "offline":
        return OfflineProvider()
    if name not in ("anthropic", "openai"):
        raise ConfigError(f"WARROOM_LLM={name!r} is not a provider: use anthropic, openai or offline")
    if isinstance(choice, str):
        raise ConfigError(f"the {name} provider needs settings (API key, base URL, model), not just its name")
    from engine.llm.model import ModelProvider

    if name == "anthropic":
        from engine.llm.anthropic import AnthropicLLM

        if choice.anthropic_api_key is None:
            raise ConfigError("WARROOM_LLM=anthropic needs ANTHROPIC_API_KEY (or set WARROOM_LLM=offline)")
        llm = AnthropicLLM(api_key=_secret(choice.anthropic_api_key), model=choice.anthropic_model,
                           base_url=choice.anthropic_base_url)
    else:
        from engine.llm.openai_compat import OpenAICompatLLM

        if not choice.openai_base_url and choice.openai_api_key is None:
            raise ConfigError("WARROOM_LLM=openai needs OPENAI_BASE_URL (a local server) or OPENAI_API_KEY")
        llm = OpenAICompatLLM(base_url=choice.openai_base_url, model=choice.openai_model,
                              api_key=_secret(choice.openai_api_key) if choice.openai_api_key else None)
    return ModelProvider(llm, fallback=OfflineProvider(), policy=policy, recorder=recorder)


def _secret(value: Any) -> str:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
