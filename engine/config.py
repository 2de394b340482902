"""The `warroom.yml` config file: alert destinations, policy and connector targets.

Credentials in targets are Vault references (`vault:<mount>/data/<path>#<field>`), never literals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class WarroomConfig(_Strict):
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    targets: dict[str, Target] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _no_literal_secrets(cls, targets: dict[str, Target]) -> dict[str, Target]:
        for name, target in targets.items():
            for key, value in target.params().items():
                if key in SECRET_FIELDS and isinstance(value, str) and not value.startswith("vault:"):
                    raise ValueError(f"targets.{name}.{key} must be a vault: reference, not a literal")
        return targets


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
