"""The `warroom.yml` config file: alert destinations, policy and connector targets.

Credentials in targets are Vault references (`vault:<mount>/data/<path>#<field>`), never literals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.models import CONNECTORS, first_error

SECRET_FIELDS = ("password", "private_key", "token", "bearer_token", "api_key", "secret")


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackConfig(_Strict):
    alert_channel: str | None = None


class TeamsConfig(_Strict):
    alert_conversation: str | None = None


class PolicyConfig(_Strict):
    approvers: list[str] = Field(default_factory=list)
    auto_run_read_only: bool = True
    two_person_rule: bool = True
    blocked_commands: list[str] = Field(default_factory=lambda: ["rm -rf /", "DROP DATABASE", "mkfs"])


class Target(BaseModel):
    """A host or endpoint a connector may reach. Connector-specific keys are kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True)
    connector: str

    @field_validator("connector")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in CONNECTORS:
            raise ValueError(f"unknown connector {value!r} (known: {', '.join(CONNECTORS)})")
        return value

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LiveQuery(_Strict):
    """One PromQL instant query run during context assembly. `{service}` in `expr` becomes the alert's (or the
    question's) service, escaped as a PromQL label value; a template naming `{service}` is skipped when no service
    is known. `services` limits it to those services (empty: every service)."""

    expr: str = Field(min_length=1, max_length=2000)
    services: list[str] = Field(default_factory=list)


class ContextConfig(_Strict):
    """Live read-only queries during context assembly; off unless `prometheus` names a target.

    They run in the bot process, which never resolves secrets (only workers do): the named target must be a
    `prometheus` target with an http(s) `url` and no credentials, or the config is refused when loaded."""

    prometheus: str | None = None                 # a target name from `targets`
    live_query_budget_s: float = Field(1.5, gt=0, le=10)   # all live queries together, wall clock
    alert_expression: bool = True                 # also query the alert's own expression (generatorURL g0.expr)
    queries: list[LiveQuery] = Field(default_factory=list, max_length=10)

    @field_validator("queries", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, list):  # `- 'up{job="{service}"}'` is shorthand for `- {expr: ...}`
            return [{"expr": item} if isinstance(item, str) else item for item in value]
        return value


class WarroomConfig(_Strict):
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    targets: dict[str, Target] = Field(default_factory=dict)
    context: ContextConfig = Field(default_factory=ContextConfig)

    @field_validator("targets")
    @classmethod
    def _no_literal_secrets(cls, targets: dict[str, Target]) -> dict[str, Target]:
        for name, target in targets.items():
            for key, value in target.params().items():
                if key in SECRET_FIELDS and isinstance(value, str) and not value.startswith("vault:"):
                    raise ValueError(f"targets.{name}.{key} must be a vault: reference, not a literal")
        return targets

    @model_validator(mode="after")
    def _live_target(self) -> "WarroomConfig":
        name = self.context.prometheus
        if name is None:
            return self
        where = f"context.prometheus: target {name!r}"
        target = self.targets.get(name)
        if target is None:
            raise ValueError(f"{where} is not defined in targets")
        if target.connector != "prometheus":
            raise ValueError(f"{where} has connector {target.connector!r}, not 'prometheus'")
        url = target.params().get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"{where} needs an http(s) url")
        credentials = sorted(_credential_keys(target.params()))
        if credentials or urlsplit(url).username or urlsplit(url).password:
            what = ", ".join(credentials) if credentials else "credentials in its url"
            raise ValueError(f"{where} carries credentials ({what}); live queries run in the bot process and "
                             "secrets are resolved only in workers, so name a Prometheus reachable without them")
        return self

    def live_target(self) -> Target | None:
        """The Prometheus target live queries go to, or None when they are off."""
        return self.targets.get(self.context.prometheus) if self.context.prometheus else None


def _credential_keys(params: dict[str, Any], prefix: str = "") -> set[str]:
    """Keys holding a `vault:` reference or named like a secret, nested mappings and lists included."""
    found: set[str] = set()
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= _credential_keys(value, f"{path}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    found |= _credential_keys(item, f"{path}[{i}].")
                elif isinstance(item, str) and item.startswith("vault:"):
                    found.add(path)
        elif (isinstance(value, str) and value.startswith("vault:")) or \
                (key.lower() in (*SECRET_FIELDS, "authorization") and value):
            found.add(path)
    return found


def load_config(path: Path) -> WarroomConfig:
    """Read `warroom.yml`; a missing file is an empty config, a broken one a ConfigError."""
    path = Path(path).expanduser()
    if not path.exists():
        return WarroomConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return WarroomConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc)}") from exc
