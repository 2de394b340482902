"""The `with:` parameters each connector accepts, as pydantic models.

One schema per connector. Every connector checks its parameters with `validate_params` before it does anything,
so nothing unchecked reaches a server; the planner can call the same function to refuse a step before a card is
drawn. Unknown keys are refused rather than ignored: a misspelt `replicas` must not silently become "no change"."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


def _timeout() -> Any:
    """A fresh field per model: pydantic fills a FieldInfo in when it builds a model, so none is shared."""
    return Field(None, gt=0, le=3600, description="seconds")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- http ------------------------------------------------------------------------------------------------------

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class HttpParams(_Params):
    method: str = "GET"
    url: str | None = Field(None, min_length=1)
    path: str | None = Field(None, min_length=1)      # joined to the target's base_url
    headers: dict[str, str] = Field(default_factory=dict)
    json_: Any = Field(None, alias="json")           # `json` itself would shadow a BaseModel method
    body: str | None = None
    expect_status: int | None = Field(None, ge=100, le=599)
    retry_5xx: bool = False
    timeout: float | None = _timeout()

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in HTTP_METHODS:
            raise ValueError(f"must be one of {', '.join(HTTP_METHODS)}")
        return value.upper()

    @model_validator(mode="after")
    def _one_address(self) -> "HttpParams":
        if bool(self.url) == bool(self.path):
            raise ValueError("give exactly one of `url` or `path`")
        if self.json_ is not None and self.body is not None:
            raise ValueError("give `json` or `body`, not both")
        return self


# --- ssh -------------------------------------------------------------------------------------------------------

class SshParams(_Params):
    command: str = Field(min_length=1, max_length=4000)
    expect_exit: int = Field(0, ge=0, le=255)
    timeout: float | None = _timeout()

    @field_validator("command")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


# --- sql -------------------------------------------------------------------------------------------------------

class SqlParams(_Params):
    query: str = Field(min_length=1, max_length=20000, validation_alias=AliasChoices("query", "sql"))
    params: list[Any] | dict[str, Any] | None = None   # %s placeholders (list) or %(name)s ones (dict)
    max_rows: int = Field(50, ge=1, le=1000)
    timeout: float | None = _timeout()


# --- kubernetes ------------------------------------------------------------------------------------------------

K8S_ACTIONS = ("get", "list", "logs", "rollout_restart", "rollout_undo", "scale")
# Secrets are left out on purpose: their values would end up in chat.
K8S_KINDS = ("deployment", "statefulset", "daemonset", "replicaset", "pod", "service", "configmap", "job",
             "cronjob", "ingress", "horizontalpodautoscaler", "persistentvolumeclaim", "event", "node", "namespace")
K8S_SHORT_NAMES = {"deploy": "deployment", "sts": "statefulset", "ds": "daemonset", "rs": "replicaset", "po": "pod",
                   "svc": "service", "cm": "configmap", "ing": "ingress", "hpa": "horizontalpodautoscaler",
                   "pvc": "persistentvolumeclaim", "ev": "event", "no": "node", "ns": "namespace"}
K8S_ROLLOUT_KINDS = ("deployment", "statefulset", "daemonset")
K8S_SCALE_KINDS = ("deployment", "statefulset", "replicaset")
_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class KubernetesParams(_Params):
    action: Literal["get", "list", "logs", "rollout_restart", "rollout_undo", "scale"]
    kind: str
    name: str | None = Field(None, pattern=_DNS_NAME)
    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    replicas: int | None = Field(None, ge=0, le=1000)
    label_selector: str | None = Field(None, min_length=1, max_length=1000)   # list only
    container: str | None = Field(None, pattern=_DNS_NAME)                   # logs only
    previous: bool = False                                                   # logs only
    tail_lines: int | None = Field(None, ge=1, le=5000)                      # logs only
    timeout: float | None = _timeout()

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        """`Deployment`, `deployments` and `deploy` all mean deployment, as with kubectl."""
        if not isinstance(value, str):
            return value
        kind = value.strip().lower()
        kind = K8S_SHORT_NAMES.get(kind, kind)
        if kind not in K8S_KINDS and kind.endswith("s") and kind[:-1] in K8S_KINDS:
            kind = kind[:-1]
        if kind not in K8S_KINDS:
            raise ValueError(f"unsupported kind {value!r} (supported: {', '.join(K8S_KINDS)})")
        return kind

    @model_validator(mode="after")
    def _fits_action(self) -> "KubernetesParams":
        action, kind = self.action, self.kind
        if action != "list" and not self.name:
            raise ValueError(f"`name` is required for {action}")
        if action == "list" and self.name:
            raise ValueError("`name` is not allowed for list (use get)")
        if self.label_selector and action != "list":
            raise ValueError("`label_selector` is only for list")
        if action == "scale":
            if self.replicas is None:
                raise ValueError("`replicas` is required for scale")
            if kind not in K8S_SCALE_KINDS:
                raise ValueError(f"scale works on {', '.join(K8S_SCALE_KINDS)}, not {kind}")
        elif self.replicas is not None:
            raise ValueError("`replicas` is only for scale")
        if action == "rollout_restart" and kind not in K8S_ROLLOUT_KINDS:
            raise ValueError(f"rollout_restart works on {', '.join(K8S_ROLLOUT_KINDS)}, not {kind}")
        if action == "rollout_undo" and kind != "deployment":
            raise ValueError(f"rollout_undo works on deployment, not {kind}")
        if action == "logs" and kind != "pod":
            raise ValueError(f"logs works on pod, not {kind}")
        if action != "logs" and (self.container or self.previous or self.tail_lines):
            raise ValueError("`container`, `previous` and `tail_lines` are only for logs")
        return self


# --- prometheus ------------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(?:now)?\s*-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


def parse_time(value: str | float | int, now: float) -> float:
    """Unix seconds from `now`, `-15m` / `now-2h`, unix seconds, or RFC3339; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a time, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not RFC3339, unix seconds, `now` or relative like -15m") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_duration(value: str | float | int) -> float:
    """Seconds from `30s`, `1m30s`, or a number of seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip()
        if _DURATION.match(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a duration like 30s, 5m or 1h") from None
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


class PrometheusParams(_Params):
    query: str = Field(min_length=1, max_length=20000)
    type: Literal["instant", "range"] = "instant"
    time: str | float | None = None     # instant only
    start: str | float | None = None    # range only; default -1h
    end: str | float | None = None      # range only; default now
    step: str | float | None = None     # range only; default about 250 points
    timeout: float | None = _timeout()

    @field_validator("time", "start", "end")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if value is not None:
            parse_time(value, now=0.0)
        return value

    @field_validator("step")
    @classmethod
    def _step(cls, value: Any) -> Any:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> "PrometheusParams":
        if self.type == "instant" and any(v is not None for v in (self.start, self.end, self.step)):
            raise ValueError("`start`, `end` and `step` are only for type: range")
        if self.type == "range" and self.time is not None:
            raise ValueError("`time` is only for type: instant")
        return self


# --- entry point -----------------------------------------------------------------------------------------------

SCHEMAS: dict[str, type[_Params]] = {"http": HttpParams, "ssh": SshParams, "sql": SqlParams,
                                     "kubernetes": KubernetesParams, "prometheus": PrometheusParams}


def validate_params(connector: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The step's parameters, checked and normalised (defaults filled, `sql` -> `query`, kinds singular).
    ValueError with one line naming the offending field otherwise."""
    schema = SCHEMAS.get(connector)
    if schema is None:
        raise ValueError(f"unknown connector {connector!r} (known: {', '.join(SCHEMAS)})")
    try:
        model = schema.model_validate(params or {})
    except ValidationError as exc:
        raise ValueError(f"{connector} step: {_first_problem(exc, schema)}") from None
    return model.model_dump(by_alias=True, exclude_none=True)


def params_refusal(connector: str, params: dict[str, Any] | None, where: str = "") -> str | None:
    """Why a step's parameters would be refused by its connector, checked before a card is drawn rather than when
    the worker runs it; None when they are fine."""
    try:
        validate_params(connector, params)
    except ValueError as exc:
        return f"{where}{exc}"
    return None


def _first_problem(exc: ValidationError, schema: type[_Params]) -> str:
    errors = exc.errors()
    # An unknown key first: `cmd` instead of `command` is better reported as the typo than as a missing field.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    field = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_spelling(name, f) for name, f in schema.model_fields.items())
        return f"unknown key `{field}` (allowed: {allowed})"
    if error["type"] == "missing":
        return f"`{field}` is required"
    return f"`{field}`: {message}" if field else message


def _spelling(name: str, field: Any) -> str:
    if isinstance(field.validation_alias, AliasChoices):
        return "|".join(str(choice) for choice in field.validation_alias.choices)
    return field.alias or name
