"""The `warroom.yml` config file: alert destinations, policy and connector targets.

Credentials in targets are Vault references (`vault:<mount>/data/<path>#<field>`), never literals.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.alerts import normalise_environment
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


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Scope(_Strict):
    """Which steps a rule covers: empty lists mean every service / environment."""

    services: list[str] = Field(default_factory=list)
    environments: list[str] = Field(default_factory=list)

    @field_validator("environments")
    @classmethod
    def _normalised(cls, value: list[str]) -> list[str]:
        return [normalise_environment(v) or v for v in value]

    def covers(self, service: str | None, environment: str | None) -> bool:
        return ((not self.services or service in self.services)
                and (not self.environments or environment in self.environments))


class ApproverRule(Scope):
    """Who may approve steps for these services and environments (ids, emails, UPNs, AAD ids, `group:<name>`)."""

    approvers: list[str] = Field(min_length=1)


class ChangeWindow(Scope):
    """State-changing steps in scope run only inside a window: `days` at `start`–`end` local to `timezone`."""

    days: list[str] = Field(default_factory=lambda: list(DAYS[:5]))
    start: str = "00:00"
    end: str = "24:00"
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        days = [d.strip().lower()[:3] for d in value]
        unknown = [d for d in days if d not in DAYS]
        if unknown or not days:
            raise ValueError(f"days must be among {', '.join(DAYS)} (got {value})")
        return days

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        hours, sep, minutes = str(value).partition(":")
        if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2
                and (0 <= int(hours) <= 23 and int(minutes) <= 59 or (hours, minutes) == ("24", "00"))):
            raise ValueError(f"time of day must be HH:MM (got {value!r})")
        return f"{int(hours):02d}:{minutes}"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "ChangeWindow":
        if self.start >= self.end:
            raise ValueError(f"change window start {self.start} must be before end {self.end}")
        return self


class Freeze(Scope):
    """A planned change freeze: no state-changing step in scope runs between `start` and `end`."""

    start: datetime
    end: datetime
    reason: str = "change freeze"

    @model_validator(mode="after")
    def _ordered(self) -> "Freeze":
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("freeze start and end need a timezone (e.g. 2026-12-20T00:00:00Z)")
        if self.start >= self.end:
            raise ValueError("freeze start must be before its end")
        return self


class PolicyConfig(_Strict):
    approvers: list[str] = Field(default_factory=list)
    auto_run_read_only: bool = True
    two_person_rule: bool = True
    blocked_commands: list[str] = Field(default_factory=lambda: ["rm -rf /", "DROP DATABASE", "mkfs"])
    # --- extensions -------------------------------------------------------------------------------------
    groups: dict[str, list[str]] = Field(default_factory=dict)        # name -> members, used as `group:<name>`
    approver_rules: list[ApproverRule] = Field(default_factory=list)  # matching rules replace `approvers`
    production_environments: list[str] = Field(default_factory=lambda: ["production"])
    approval_expiry_minutes: int = Field(240, ge=0)       # a plan card older than this refuses clicks; 0: never
    change_windows: list[ChangeWindow] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)
    max_state_changes_per_hour: int = Field(10, ge=0)     # per service; 0: no limit
    auto_rollback: bool = True                            # a failed step's declared rollback runs unasked

    @field_validator("production_environments")
    @classmethod
    def _normalised(cls, value: list[str]) -> list[str]:
        return [normalise_environment(v) or v for v in value]

    @model_validator(mode="after")
    def _groups_exist(self) -> "PolicyConfig":
        named = [a for a in [*self.approvers, *(a for r in self.approver_rules for a in r.approvers)]
                 if a.startswith("group:")]
        missing = sorted({a for a in named if a.removeprefix("group:") not in self.groups})
        if missing:
            raise ValueError(f"policy names undefined groups: {', '.join(missing)} (define them in policy.groups)")
        return self


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


class ExecutionConfig(_Strict):
    """How workers run approved steps."""

    dry_run: bool = False      # validate, resolve credentials and say what would run, without running it


class NoiseConfig(_Strict):
    """When an alert counts as noise (engine/noise.py): its investigation is replaced by a note that says so
    and offers to silence it or tune its rule."""

    threshold: float = Field(0.7, gt=0, le=1)            # score at or above this: noise
    lookback_hours: float = Field(24, gt=0, le=24 * 90)   # the record considered
    flap_firings: int = Field(4, ge=1)                    # this many re-firings in the lookback: fully flapping
    quick_resolve_minutes: float = Field(10, gt=0)        # resolved this fast, untouched: it went away by itself
    mark_memory_days: float = Field(30, gt=0)             # how long a human "noise"/"signal" verdict counts
    silence_hours: float = Field(24, gt=0, le=24 * 30)    # what the Silence button silences for


class AlertsConfig(_Strict):
    """Alert grouping and storms: how long a group stays open to new alerts, when a channel is in a storm,
    and how many investigations (LLM calls) a storm may cost; and when an alert is noise."""

    group_window_minutes: float = Field(60, gt=0, le=24 * 60)   # a group takes new alerts this long after its last
    storm_new_groups_per_minute: int = Field(10, ge=1)          # more new groups than this a minute: a storm
    storm_investigations: int = Field(3, ge=0)                  # groups investigated per storm; the rest are listed
    noise: NoiseConfig = Field(default_factory=NoiseConfig)


class LearningConfig(_Strict):
    """`/warroom learn`: runbook drafts from resolved incidents."""

    # A draft updates the existing runbook (same alert or service) whose text is at least this similar (cosine of
    # the embeddings) instead of starting a new one. A runbook whose steps the incident ran is always updated.
    similar_runbook_threshold: float = Field(0.8, ge=0, le=1)
    related_documents: int = Field(3, ge=0, le=10)   # retrieved documents cited in a draft


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class DigestConfig(_Strict):
    """Where and when serve posts the weekly insights digest (one replica posts it, once per ISO week)."""

    channel: str | None = None        # Slack channel id
    conversation: str | None = None   # Teams conversation id
    weekday: str = "monday"
    hour_utc: int = Field(9, ge=0, le=23)

    @field_validator("weekday")
    @classmethod
    def _weekday(cls, value: str) -> str:
        day = next((d for d in WEEKDAYS if value.strip().lower() in (d, d[:3])), None)
        if day is None:
            raise ValueError(f"must be a day of the week (monday … sunday), not {value!r}")
        return day


class InsightsConfig(_Strict):
    """`/warroom insights` and the weekly digest: recurring incident clusters ranked by what they cost."""

    similarity: float = Field(0.8, ge=0, le=1)      # incident embeddings at least this close join one cluster
    min_incidents: int = Field(2, ge=2)              # fewer incidents than this in the window: not recurring
    window_days: float = Field(30, gt=0, le=365)     # incidents detected this recently count
    top: int = Field(5, ge=1, le=20)                 # clusters shown
    digest: DigestConfig | None = None


class WarroomConfig(_Strict):
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    targets: dict[str, Target] = Field(default_factory=dict)
    context: ContextConfig = Field(default_factory=ContextConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    insights: InsightsConfig = Field(default_factory=InsightsConfig)

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
    except OSError as exc:  # a directory, no permission: say so rather than crash every command
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return WarroomConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc)}") from exc
